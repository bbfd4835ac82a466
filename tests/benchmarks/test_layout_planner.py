"""The layout planner's arithmetic against the original AERIS layouts and the real layout rules."""

import importlib.util
import sys
from pathlib import Path

import pytest

from aeris.config import load_config
from aeris.model.flops import parameter_count
from aeris.model.network import AerisNet
from swipe.layout import WindowLayout
from tests.support import REPO

_spec = importlib.util.spec_from_file_location(
    "layout_planner", REPO / "benchmarks" / "layout_planner.py")
planner = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = planner  # its dataclasses look their module up
_spec.loader.exec_module(planner)


def test_original_40b_layout():
    cfg = load_config("aeris-40b-bench")
    r = planner.plan(cfg, (14, 20, 6, 6, 12), (720, 1440), 20)
    assert r["world"] == 120_960                       # 14 replicas x 8,640 tiles (docs/differences.md, "Reference layouts of the original")
    assert r["world"] // 14 == 20 * 12 * 6 * 6
    assert r["windows_per_rank"] == (24 // 6) * (48 // 6)
    assert r["tokens_per_rank"] == 720 * 1440 // (6 * 6 * 12)
    assert r["params_total"] == parameter_count(cfg.model, 142, 69)
    assert r["blocks_per_stage"] == [0] + [2] * 18 + [0]
    assert r["weight_group"] == 14 * 6 * 6 * 12


def test_stage_params_add_up_to_the_model(tmp_path):
    cfg = load_config("tiny", ["model.depth=5"])
    for pp in (1, 2, 3, 4):
        r = planner.plan(cfg, (1, pp, 1, 1, 1), (64, 128), 4, n_prog=19, n_forcing=4)
        net = AerisNet(cfg.model, 19, 2 * 19 + 4, (64, 128))
        assert r["params_total"] == sum(p.numel() for p in net.parameters())
        assert sum(r["blocks_per_stage"]) == 5


def test_enumerated_meshes_are_valid_and_complete():
    cfg = load_config("tiny")   # heads 4, window 8x8
    grid = (64, 128)            # 8 x 16 windows
    meshes = planner.enumerate_meshes(cfg, grid, 8)
    assert meshes and all(dp * pp * wy * wx * sp == 8 for dp, pp, wy, wx, sp in meshes)
    for dp, pp, wy, wx, sp in meshes:
        assert cfg.model.heads % sp == 0 and pp <= cfg.model.depth
        WindowLayout(*grid, 8, 8, wpy=wy, wpx=wx, sp=sp)   # does not raise
    assert (1, 2, 1, 1, 4) in meshes and (2, 1, 2, 2, 1) in meshes
    assert (1, 1, 1, 1, 8) not in meshes                    # heads 4 % sp 8 != 0


def test_bad_mesh_is_refused():
    cfg = load_config("tiny")
    with pytest.raises(ValueError, match="heads"):
        planner.plan(cfg, (1, 1, 1, 1, 8), (64, 128), 1)
