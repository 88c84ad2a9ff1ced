"""Dataset validation, content hashes and area interpolation."""

from __future__ import annotations

import pytest
import torch

from landscape.data import Dataset, content_hash
from landscape.data.base import area_weights, resize_area, uint8_to_unit


def _ds(**overrides):
    fields = {"x": torch.zeros(4, 3), "y": torch.tensor([0, 1, 2, 1]), "num_classes": 3, "meta": {"name": "toy"}}
    fields.update(overrides)
    return Dataset(**fields)


def test_dataset_accepts_valid_and_summarises():
    ds = _ds()
    assert len(ds) == 4 and ds.name == "toy"
    assert ds.class_counts().tolist() == [1, 2, 1]
    d = ds.to_dict()
    assert d["input_shape"] == [3] and d["content_hash"] == content_hash(ds.x, ds.y)


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"x": torch.zeros(4, 3, dtype=torch.int64)}, "x must be a floating-point tensor"),
        ({"x": torch.zeros(4, 3, 2)}, r"x must have shape \(N, D\) or \(N, C, H, W\), got \(4, 3, 2\)"),
        ({"y": torch.tensor([0, 1, 2, 1], dtype=torch.int32)}, "y must be an int64 tensor"),
        ({"y": torch.tensor([0, 1, 2])}, "x has 4 rows but y has 3 labels"),
        ({"num_classes": 0}, "num_classes must be a positive int, got 0"),
        ({"y": torch.tensor([0, 1, 3, 1])}, r"labels must lie in \[0, 3\), got range \[0, 3\]"),
        ({"y": torch.tensor([0, -1, 2, 1])}, r"labels must lie in \[0, 3\), got range \[-1, 2\]"),
        ({"meta": ["name"]}, "meta must be a mapping"),
    ],
)
def test_dataset_rejects_invalid(overrides, match):
    with pytest.raises(ValueError, match=match):
        _ds(**overrides)


def test_content_hash_is_exact_and_order_shape_dtype_sensitive():
    a = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    b = torch.tensor([1, 2, 3])
    h = content_hash(a, b)
    assert h == content_hash(a.clone(), b.clone())
    assert h != content_hash(b, a)  # argument order
    assert content_hash(a) != content_hash(a.reshape(4, 3))  # shape
    assert content_hash(a) != content_hash(a.to(torch.float64))  # dtype
    c = a.clone()
    c[2, 3] = torch.nextafter(c[2, 3], torch.tensor(100.0))  # one ulp
    assert content_hash(c) != content_hash(a)
    assert content_hash(a.t().contiguous().t()) == content_hash(a)  # layout in memory does not matter
    assert content_hash(torch.tensor(5.0)) != content_hash(torch.tensor([5.0]))  # 0-dim vs (1,)


def test_content_hash_argument_errors():
    with pytest.raises(ValueError, match="needs at least one tensor"):
        content_hash()
    with pytest.raises(ValueError, match="argument 1 must be a torch.Tensor, got list"):
        content_hash(torch.zeros(1), [1.0])


def test_area_weights_closed_form():
    # 3 -> 2: output pixel 0 covers [0, 1.5): all of pixel 0 and half of pixel 1
    expected = torch.tensor([[2 / 3, 1 / 3, 0.0], [0.0, 1 / 3, 2 / 3]], dtype=torch.float64)
    torch.testing.assert_close(area_weights(3, 2), expected, rtol=0, atol=1e-15)
    # divisor case: block means
    torch.testing.assert_close(area_weights(4, 2), torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]],
                                                                dtype=torch.float64), rtol=0, atol=0)
    for source, target in [(28, 10), (64, 20), (32, 7), (5, 5)]:
        w = area_weights(source, target)
        torch.testing.assert_close(w.sum(dim=1), torch.ones(target, dtype=torch.float64), rtol=0, atol=1e-14)
        torch.testing.assert_close(w.sum(dim=0), torch.full((source,), target / source, dtype=torch.float64),
                                   rtol=0, atol=1e-14)


def test_resize_area_matches_float64_reference():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 7, 7, generator=gen, dtype=torch.float64)
    out = resize_area(x, 3, native=7)
    w = area_weights(7, 3)
    ref = torch.stack([torch.stack([w @ x[n, c] @ w.T for c in range(3)]) for n in range(2)])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-14)
    assert resize_area(x, None, native=7) is x and resize_area(x, 7, native=7) is x
    with pytest.raises(ValueError, match=r"expected images \(N, C, 8, 8\), got \(2, 3, 7, 7\)"):
        resize_area(x, 4, native=8)


def test_uint8_to_unit():
    t = uint8_to_unit(torch.tensor([0, 51, 255], dtype=torch.uint8))
    assert t.dtype == torch.float32 and t.tolist() == [0.0, pytest.approx(0.2), 1.0]
    with pytest.raises(ValueError, match="expected uint8 pixels, got torch.int64"):
        uint8_to_unit(torch.tensor([1]))
