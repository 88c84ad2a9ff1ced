"""profiles/paper_smoke.yaml (landscape.pipeline.smoke): generated from the paper profile, with
the paper's stages, architectures, data set loaders, optimizers and analyses, at tiny sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from landscape.pipeline import smoke
from landscape.pipeline.dvcfile import generate
from landscape.pipeline.params import load_params

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def profiles() -> tuple[dict, dict]:
    return load_params(REPO / "profiles" / "paper.yaml"), load_params(REPO / "profiles" / "paper_smoke.yaml")


def _used(params: dict) -> dict[str, set]:
    configs = [c for spec in params["experiments"].values() for c in spec["configs"].values()]
    return {
        "architectures": {c["model"]["name"] for c in configs},
        "optimizers": {c["train"].get("optimizer", "sgd") for c in configs},
        "loaders": {d["name"] for d in params["datasets"].values()},
        "amp": {bool(c["train"].get("amp")) for c in configs},
    }


def test_committed_smoke_profile_is_the_generated_one(tmp_path):
    assert smoke.main(["--check"]) == 0
    stale = tmp_path / "stale.yaml"
    stale.write_text((REPO / "profiles" / "paper_smoke.yaml").read_text().replace("seeds: [0, 1]", "seeds: [0]"))
    assert smoke.main(["--check", "--out", str(stale)]) == 1


def test_smoke_profile_keeps_every_code_path_of_the_paper(profiles):
    paper, small = profiles
    assert _used(small) == _used(paper)
    assert list(generate(small)["stages"]) == list(generate(paper)["stages"])  # the same dvc.yaml stages
    assert set(small["curvature"]) == set(paper["curvature"]) and set(small["probes"]) == set(paper["probes"])
    for group in ("bounds", "escape", "phi", "optimizers", "spectra_scaling", "hypotheses", "report"):
        assert (group in small) == (group in paper), group
    kept = smoke.select_configs(paper)
    for group, spec in small["experiments"].items():
        assert list(spec["configs"]) == kept[group] and set(kept[group]) <= set(paper["experiments"][group]["configs"])
    assert kept["h1_batch"] == ["b32", "b2048"]  # one architecture, the batch varied: smallest and largest
    assert set(small["bounds"]["runs"]) <= {f"{g}/{c}" for g, cs in kept.items() for c in cs}


def test_smoke_sizes_are_tiny(profiles):
    _, small = profiles
    assert small["seeds"] == [0, 1]
    for spec in small["experiments"].values():
        for cfg in spec["configs"].values():
            assert cfg["train"]["epochs"] == 1 and cfg["train"]["batch_size"] <= 2048 // smoke.BATCH_DIVISOR
            assert cfg["model"].get("width", 0) <= 4096 // smoke.WIDTH_DIVISOR
    for spec in small["datasets"].values():
        assert not spec.get("download") and spec.get("probe_size", 0) <= smoke.CAPS["probe_size"]
        if spec["name"] in smoke.IMAGE_SETS:
            assert spec["options"]["image_size"] == smoke.IMAGE_SIZE


def test_shrink_profile_refuses_a_mapping_without_experiments():
    with pytest.raises(ValueError, match="experiments"):
        smoke.shrink_profile({"seeds": [0]})
