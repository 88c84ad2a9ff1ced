"""WikiText-2 (Merity et al., 2017) as next-token prediction windows, from its raw release.

Expected under ``root`` (the layout of the official ``wikitext-2-raw-v1.zip``)::

    wikitext-2-raw/wiki.train.raw    36,718 lines, about 2.1 M words
    wikitext-2-raw/wiki.valid.raw
    wikitext-2-raw/wiki.test.raw

Tokenisation is the word level of the benchmark: each non-blank line is split on
whitespace and ends with an ``<eos>`` token (blank lines, which separate paragraphs, give
nothing). The vocabulary comes from the train split alone: id 0 is ``<unk>``, then words by
decreasing train count (ties in alphabetical order), cut to ``max_vocab`` ids in all; any
other word, in any split, maps to ``<unk>``.

Each example is one window of ``context`` consecutive tokens and its label is the token that
follows, so the data set fits the classification contract of :class:`Dataset`: ``x`` holds
token ids as float32 (exact below 2**24), ``y`` the next-token id, and ``num_classes`` is the
vocabulary size. Windows start every ``stride`` tokens along one split's token stream;
``max_windows`` keeps that many, evenly spaced over the stream, per split. ``split="all"``
stacks the official train windows and the official test windows and records
``meta["official_split"]`` (the validation file is not read). Test error is next-word error
and ``exp(test_loss)`` the perplexity of that one prediction per window.

Inputs must not be normalised (``normalize: false`` in ``params.yaml``): they are ids.
"""

from __future__ import annotations

import hashlib
import tempfile
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path

import torch

from landscape.data.base import Dataset, missing_data_message
from landscape.data.registry import register_dataset
from landscape.data.torchvision_sets import check_split, download_failed

__all__ = ["wikitext2", "tokenize", "build_vocab", "token_windows", "WIKITEXT2_URLS", "WIKITEXT2_SHA256"]

#: The release archive: its original host, then the mirror llama.cpp's scripts fetch.
WIKITEXT2_URLS = (
    "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-raw-v1.zip",
    "https://huggingface.co/datasets/ggml-org/ci/resolve/main/wikitext-2-raw-v1.zip",
)
#: SHA-256 of ``wikitext-2-raw-v1.zip`` (4,721,645 bytes).
WIKITEXT2_SHA256 = "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11"
UNK, EOS = "<unk>", "<eos>"
_FOLDER = "wikitext-2-raw"
_FILES = {"train": "wiki.train.raw", "test": "wiki.test.raw"}
_MAX_EXACT_ID = 2**24  # float32 holds every integer up to here


def tokenize(text: str) -> list[str]:
    """Word tokens of a raw WikiText file: each non-blank line split on whitespace, plus ``<eos>``."""
    tokens: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words:
            tokens.extend(words)
            tokens.append(EOS)
    return tokens


def build_vocab(train_tokens: list[str], max_vocab: int | None = None) -> list[str]:
    """Vocabulary of the train tokens: ``<unk>`` first, then by count (desc), ties alphabetical.

    Args:
        train_tokens: Token sequence of the train split.
        max_vocab: Total size cap including ``<unk>`` (>= 2); ``None`` keeps every word.
    """
    counts = Counter(t for t in train_tokens if t != UNK)
    words = sorted(counts, key=lambda w: (-counts[w], w))
    if max_vocab is not None:
        words = words[: max_vocab - 1]
    return [UNK, *words]


def token_windows(ids: torch.Tensor, context: int, stride: int,
                  max_windows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of ``context`` ids and the id after each.

    Args:
        ids: int64 (n,) token stream.
        context: Tokens per window T >= 1.
        stride: Tokens between window starts >= 1.
        max_windows: Keep this many windows, at evenly spaced positions of the full list
            (window ``floor(i * m / k)`` for i < k of m); ``None`` keeps all.

    Returns:
        ``(x, y)``: int64 (m, T) windows and int64 (m,) next tokens.
    """
    n = int(ids.shape[0])
    if n <= context:
        raise ValueError(f"a stream of {n} tokens has no window of {context} tokens plus a next token")
    starts = torch.arange(0, n - context, stride)
    if max_windows is not None and max_windows < starts.shape[0]:
        m = starts.shape[0]
        starts = starts[torch.arange(max_windows) * m // max_windows]
    x = ids[starts.unsqueeze(1) + torch.arange(context)]
    return x, ids[starts + context]


def _fetch(root: Path, base: Path, urls: tuple[str, ...], sha256: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        with tempfile.NamedTemporaryFile(dir=root, suffix=".zip.part", delete=False) as tmp:
            part = Path(tmp.name)
        try:
            with urllib.request.urlopen(url, timeout=60) as response, part.open("wb") as fh:
                digest = hashlib.sha256()
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    fh.write(chunk)
            if digest.hexdigest() != sha256:
                raise RuntimeError(f"sha256 {digest.hexdigest()} differs from the release's {sha256}")
            with zipfile.ZipFile(part) as archive:
                archive.extractall(root)
            return
        except (OSError, RuntimeError, zipfile.BadZipFile) as err:
            errors.append(f"{url}: {type(err).__name__}: {err}")
        finally:
            part.unlink(missing_ok=True)
    raise download_failed("wikitext2", root, base, RuntimeError("; ".join(errors)))


def _check_positive(name: str, value: int | None, *, allow_none: bool, minimum: int = 1) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{' or None' if allow_none else ''}, got {value!r}")


@register_dataset("wikitext2", uses_root=True)
def wikitext2(root: Path, download: bool = False, split: str = "all", context: int = 64,
              stride: int | None = None, max_vocab: int | None = None,
              max_windows: int | None = None) -> Dataset:
    """WikiText-2 raw as (N, context) next-token windows; num_classes = vocabulary size.

    Args:
        root: Directory containing ``wikitext-2-raw/``.
        download: Fetch and unzip the release archive (sha256-checked) when missing.
        split: "all" (official train then test), "train" or "test".
        context: Tokens per window.
        stride: Tokens between window starts (default ``context``: disjoint windows).
        max_vocab: Vocabulary size cap including ``<unk>`` (>= 2); ``None``: every train word.
        max_windows: Windows kept per split, evenly spaced; ``None``: all.
    """
    splits = check_split(split)
    _check_positive("context", context, allow_none=False)
    _check_positive("stride", stride, allow_none=True)
    _check_positive("max_vocab", max_vocab, allow_none=True, minimum=2)
    _check_positive("max_windows", max_windows, allow_none=True)
    stride = context if stride is None else stride
    base = root / _FOLDER
    needed = [base / _FILES["train"]] + ([base / _FILES["test"]] if "test" in splits else [])
    if any(not p.is_file() for p in needed):
        if not download:
            missing = [p for p in needed if not p.is_file()]
            raise FileNotFoundError(missing_data_message("wikitext2", root, missing, base, can_download=True))
        _fetch(root, base, WIKITEXT2_URLS, WIKITEXT2_SHA256)

    streams = {s: tokenize((base / _FILES[s]).read_text(encoding="utf-8")) for s in {"train", *splits}}
    vocab = build_vocab(streams["train"], max_vocab)
    if len(vocab) > _MAX_EXACT_ID:
        raise ValueError(f"a vocabulary of {len(vocab)} ids is not exact in float32; set max_vocab")
    index = {w: i for i, w in enumerate(vocab)}
    xs, ys, sizes, tokens = [], [], {"train": 0, "test": 0}, {}
    for s in splits:
        ids = torch.tensor([index.get(t, 0) for t in streams[s]], dtype=torch.int64)
        x, y = token_windows(ids, context, stride, max_windows)
        xs.append(x.to(torch.float32))
        ys.append(y)
        sizes[s], tokens[s] = int(y.shape[0]), {"tokens": int(ids.shape[0]), "unk_fraction": float((ids == 0).double().mean())}
    meta = {"name": "wikitext2", "source": f"{_FOLDER} directory", "root": str(root), "official_split": sizes,
            "context": context, "stride": stride, "max_vocab": max_vocab, "max_windows": max_windows,
            "vocab_size": len(vocab), "vocab_sha256": hashlib.sha256("\n".join(vocab).encode()).hexdigest(),
            "vocab_head": vocab[:20], "streams": tokens, "inputs": "token ids as float32; label = next token"}
    return Dataset(x=torch.cat(xs), y=torch.cat(ys), num_classes=len(vocab), meta=meta)
