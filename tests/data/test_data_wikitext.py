"""WikiText-2 from its raw release format: tokens, vocabulary, windows and download, checked by hand."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import torch

from landscape.data import load_dataset, make_splits
from landscape.data import wikitext

TRAIN = " = A = \n \n the cat sat \n the dog sat \n"
TEST = " the bird sat \n"
# vocabulary by train count, ties alphabetical: <eos> x3; '=', 'sat', 'the' x2; 'A', 'cat', 'dog' x1
VOCAB = ["<unk>", "<eos>", "=", "sat", "the", "A", "cat", "dog"]
TRAIN_IDS = [2, 5, 2, 1, 4, 6, 3, 1, 4, 7, 3, 1]
TEST_IDS = [4, 0, 3, 1]  # 'bird' is not a train word


def _write(root: Path, train: str = TRAIN, test: str = TEST) -> None:
    base = root / "wikitext-2-raw"
    base.mkdir(parents=True, exist_ok=True)
    (base / "wiki.train.raw").write_text(train, encoding="utf-8")
    (base / "wiki.valid.raw").write_text(" \n", encoding="utf-8")
    (base / "wiki.test.raw").write_text(test, encoding="utf-8")


def test_tokens_and_vocabulary_follow_the_benchmark_convention():
    tokens = wikitext.tokenize(TRAIN)
    assert tokens == ["=", "A", "=", "<eos>", "the", "cat", "sat", "<eos>", "the", "dog", "sat", "<eos>"]
    assert wikitext.build_vocab(tokens) == VOCAB
    assert wikitext.build_vocab(tokens, max_vocab=4) == VOCAB[:4]


def test_windows_and_labels_by_hand(tmp_path):
    _write(tmp_path)
    ds = load_dataset("wikitext2", root=tmp_path, context=3, stride=2)
    # train starts 0, 2, 4, 6, 8 (a window needs a next token); test start 0
    expected_x = [TRAIN_IDS[s:s + 3] for s in (0, 2, 4, 6, 8)] + [TEST_IDS[0:3]]
    expected_y = [TRAIN_IDS[s + 3] for s in (0, 2, 4, 6, 8)] + [TEST_IDS[3]]
    assert ds.x.dtype == torch.float32 and ds.x.tolist() == expected_x
    assert ds.y.tolist() == expected_y
    assert ds.num_classes == len(VOCAB) and ds.meta["vocab_head"] == VOCAB
    assert ds.meta["official_split"] == {"train": 5, "test": 1}
    assert ds.meta["streams"]["test"] == {"tokens": 4, "unk_fraction": 0.25}
    splits = make_splits(ds, probe_size=2, seed=0, official_split=True)
    assert splits.test[1].tolist() == [TEST_IDS[3]]


def test_vocabulary_cap_maps_rare_words_to_unk_and_windows_thin_evenly(tmp_path):
    _write(tmp_path)
    ds = load_dataset("wikitext2", root=tmp_path, split="train", context=3, stride=2, max_vocab=4, max_windows=2)
    capped = [i if i < 4 else 0 for i in TRAIN_IDS]
    assert ds.num_classes == 4
    assert ds.x.tolist() == [capped[0:3], capped[4:7]]  # windows 0 and 2 of 5: starts 0 and 4
    assert ds.y.tolist() == [capped[3], capped[7]]


@pytest.mark.parametrize("bad", [{"context": 0}, {"stride": 0}, {"max_vocab": 1}, {"max_windows": 0},
                                 {"context": 2.5}, {"split": "valid"}])
def test_bad_options_are_refused(tmp_path, bad):
    _write(tmp_path)
    with pytest.raises(ValueError):
        load_dataset("wikitext2", root=tmp_path, **bad)


def test_too_short_stream_is_refused(tmp_path):
    _write(tmp_path)
    with pytest.raises(ValueError, match="no window of 64 tokens"):
        load_dataset("wikitext2", root=tmp_path)


def test_missing_files_name_the_set_the_root_and_the_remedy(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("wikitext2", root=tmp_path / "nowhere")
    message = str(err.value)
    assert "'wikitext2'" in message and "nowhere" in message and "wiki.train.raw" in message
    assert "data.download: true" in message


def _zip_of(root: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted((root / "wikitext-2-raw").iterdir()):
            archive.write(path, f"wikitext-2-raw/{path.name}")
    return buffer.getvalue()


def test_download_checks_the_archive_and_falls_back_to_the_next_url(tmp_path, monkeypatch):
    _write(tmp_path / "release")
    archive = tmp_path / "wikitext-2-raw-v1.zip"
    archive.write_bytes(_zip_of(tmp_path / "release"))
    absent = (tmp_path / "absent.zip").as_uri()
    monkeypatch.setattr(wikitext, "WIKITEXT2_URLS", (absent, archive.as_uri()))
    monkeypatch.setattr(wikitext, "WIKITEXT2_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    ds = load_dataset("wikitext2", root=tmp_path / "data", download=True, context=3, stride=2)
    assert ds.y.tolist() == [1, 6, 1, 7, 1, 1]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["wikitext-2-raw"]  # no partial download left

    monkeypatch.setattr(wikitext, "WIKITEXT2_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="downloading data set 'wikitext2'.*sha256"):
        load_dataset("wikitext2", root=tmp_path / "other", download=True, context=3)
    assert list((tmp_path / "other").iterdir()) == []
