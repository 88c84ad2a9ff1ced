"""profiles/paper_smoke.yaml (landscape.pipeline.smoke): generated from the paper profile, with
the paper's stages, architectures, data set loaders, optimizers and analyses, at tiny sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from landscape.pipeline import smoke
from landscape.pipeline.depth import model_depth
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
        "model options": {(c["model"]["name"], k, str(v)) for c in configs for k, v in c["model"].items()
                          if k not in (*smoke.SIZE_KEYS, "name")},
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
    assert kept["h1_batch"] == ["b32", "b128", "b2048"]  # one architecture, the batch varied: 3 sizes for H1's regression
    assert set(small["bounds"]["runs"]) <= {f"{g}/{c}" for g, cs in kept.items() for c in cs}
    assert set(small["bounds"]["sanity"].values()) <= set(small["bounds"]["runs"])


def test_smoke_profile_drops_repeated_code_paths(profiles):
    paper, small = profiles
    kept = smoke.select_configs(paper)
    assert kept["lm"] == ["b64"] and kept["h1_tiny_imagenet"] == ["b128"]  # no analysis compares their batch sizes
    assert kept["sweeps"] == ["base", "init_x2"]  # the rate / momentum / decay sweeps repeat base's path
    hyp = paper["hypotheses"]
    h2 = small["experiments"][hyp["h2_experiment"]]["configs"]
    arm = set(hyp["h2_norm_configs"])
    paper_h2 = paper["experiments"][hyp["h2_experiment"]]["configs"]
    paper_depths = {model_depth(c["model"]) for n, c in paper_h2.items() if n not in arm}
    ends = {n for n in paper_h2 if n not in arm and model_depth(paper_h2[n]["model"]) in (min(paper_depths), max(paper_depths))}
    assert {c for c in h2 if c not in arm} == ends  # H2's skip / no-skip pairs at the paper's shallowest and deepest depth,
    assert len({model_depth(h2[c]["model"]) for c in ends}) == 2  # still two depths with the blocks capped
    assert {h2[c]["model"]["skip"] for c in ends} == {True, False}
    assert max(c["model"].get("blocks_per_stage", 0) for s in small["experiments"].values() for c in s["configs"].values()) == smoke.RESNET_MAX_BLOCKS
    assert arm <= set(h2) and {h2[c]["model"]["norm"] for c in arm} == {"none", "bn", "ln"}  # and its norm arm
    h1 = small["experiments"][hyp["h1_experiment"]]["configs"].values()  # H1's regressors log2(eta/B), log2(B) both vary
    assert len({c["train"]["batch_size"] for c in h1}) == 3 and len({c["train"]["lr"] / c["train"]["batch_size"] for c in h1}) == 2
    grid = {(c["model"]["width"], c["model"]["depth"]) for c in small["experiments"]["scaling"]["configs"].values()}
    assert len(grid) == smoke.SCALING_GRID_CONFIGS and len({w for w, _ in grid}) >= 2 and len({d for _, d in grid}) >= 2
    assert [g for g, c in small["curvature"].items() if c["per_layer"]] == ["h2_arch"]
    transformers = [c["model"] for spec in small["experiments"].values() for c in spec["configs"].values()
                    if c["model"]["name"] in smoke.DEFAULT_EMBED_DIM]
    assert transformers and all(m["depth"] == smoke.TRANSFORMER_DEPTH for m in transformers)


def test_smoke_sizes_are_tiny(profiles):
    _, small = profiles
    assert small["seeds"] == [0, 1]
    for spec in small["experiments"].values():
        assert spec.get("seeds", [0, 1]) in ([0, 1], [0, 1, 5, 6])  # a group's own list: 2 primary, 2 replication seeds
        for cfg in spec["configs"].values():
            assert cfg["train"]["epochs"] == 1 and cfg["train"]["batch_size"] <= 2048 // smoke.BATCH_DIVISOR
            assert cfg["model"].get("width", 0) <= 4096 // smoke.WIDTH_DIVISOR
            if cfg["train"].get("target_loss") is not None:  # reached at the first record, one step in
                assert cfg["train"]["target_loss"] == smoke.SMOKE_TARGET_LOSS and cfg["train"]["track_every"] == 1
    for spec in small["datasets"].values():
        assert not spec.get("download") and spec.get("probe_size", 0) <= smoke.CAPS["probe_size"]
        if spec["name"] in smoke.IMAGE_SETS:
            assert spec["options"]["image_size"] == smoke.IMAGE_SIZE


def test_shrink_profile_refuses_a_mapping_without_experiments():
    with pytest.raises(ValueError, match="experiments"):
        smoke.shrink_profile({"seeds": [0]})
