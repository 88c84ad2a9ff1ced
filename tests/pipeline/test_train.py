"""The train stage's DVCLive log tolerates only the shared signal file vanishing under it."""

from __future__ import annotations

import pytest

from landscape.pipeline.train import LiveLog


class _Live:
    def __init__(self, missing: str):
        self.missing = missing

    def log_metric(self, key: str, value: float) -> None:
        pass

    def next_step(self) -> None:
        pass

    def end(self) -> None:
        raise FileNotFoundError(2, "No such file or directory", self.missing)


def test_a_concurrent_entry_removing_the_vscode_signal_file_is_not_a_failure(tmp_path):
    log = LiveLog(str(tmp_path / "dvclive"))
    log.live = _Live(str(tmp_path / ".dvc" / "tmp" / "exps" / "run" / "DVCLIVE_STEP_COMPLETED"))
    log.close([{"epoch": 0, "train_loss": 1.0}])
    assert (tmp_path / "dvclive" / "plots" / "metrics").is_dir()


def test_any_other_missing_file_still_fails(tmp_path):
    log = LiveLog(str(tmp_path / "dvclive"))
    log.live = _Live(str(tmp_path / "dvclive" / "metrics.json"))
    with pytest.raises(FileNotFoundError):
        log.close([])
