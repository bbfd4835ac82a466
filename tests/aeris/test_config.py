"""Typed config loading: files, bases, dotted overrides, and clear errors."""

import pytest

from aeris.config import ConfigError, apply_overrides, dump_config, load_config


def test_defaults_and_overrides():
    cfg = load_config(None, ["data.levels=[500, 850]", "swipe.pp=2", "data.dt_hours=24"])
    assert cfg.data.levels == [500, 850]
    assert cfg.swipe.pp == 2 and cfg.swipe.world_size == 2
    assert cfg.data.dt_hours == 24


@pytest.mark.parametrize("ov, msg", [
    ("data.nope=1", "data.nope"),
    ("nosection.x=1", "nosection"),
    ("swipe.pp=two", "swipe.pp"),
    ("data.levels=500", "data.levels"),
    ("swipe.pp", "section.key=value"),
    ("data.drop_lat_row=middle", "drop_lat_row"),
])
def test_bad_overrides_name_the_key(ov, msg):
    with pytest.raises(ConfigError, match=msg.replace(".", r"\.")):
        load_config(None, [ov])


def test_file_with_base_and_roundtrip(tmp_path):
    (tmp_path / "base.yaml").write_text("data:\n  dt_hours: 24\n  levels: [300]\nswipe:\n  sp: 4\n")
    (tmp_path / "run.yaml").write_text("base: base.yaml\ndata:\n  levels: [500]\n")
    cfg = load_config(tmp_path / "run.yaml", ["swipe.dp=2"])
    assert cfg.data.dt_hours == 24 and cfg.data.levels == [500]
    assert (cfg.swipe.sp, cfg.swipe.dp) == (4, 2)
    # dumping and reloading gives the same config
    (tmp_path / "dump.yaml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "dump.yaml") == cfg


def test_missing_file_and_self_include(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "loop.yaml")


def test_apply_overrides_does_not_mutate():
    d = {"a": {"b": 1}}
    out = apply_overrides(d, ["a.b=2", "a.c=x"])
    assert d == {"a": {"b": 1}} and out == {"a": {"b": 2, "c": "x"}}


def test_exponent_without_dot_is_a_float():
    cfg = load_config(None, ["diffusion.sigma_min=2e-1", "train.lr=1e-3"])
    assert cfg.diffusion.sigma_min == 0.2 and cfg.train.lr == 1e-3
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(None, ["diffusion.sigma_min=abc"])
