"""Typed config loading: files, bases, dotted overrides, and clear errors."""

import dataclasses

import pytest

from aeris.config import (
    CONFIG_DIR, SECTIONS, Config, ConfigError, apply_overrides, config_fields, describe_config,
    dump_config, from_dict, load_config, to_dict,
)
from aeris.confdoc import doc, field_doc


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


# ---- the static, documented tree --------------------------------------------------------------
def test_root_is_a_declared_dataclass():
    assert dataclasses.is_dataclass(Config) and isinstance(Config(), Config)
    assert SECTIONS == ("data", "synth", "swipe", "model", "diffusion", "train", "forecast", "track")
    assert from_dict(Config, to_dict(Config())) == Config() == load_config(None)


def test_every_field_has_a_doc():
    keys = [k for k, _ in config_fields()]
    assert {"data.path", "swipe.backend", "track.detect.mergedist", "track.verify.match_km"} <= set(keys)
    missing = [k for k, f in config_fields() if not field_doc(f).strip()]
    assert not missing, f"config fields without a doc (use aeris.confdoc.doc): {missing}"


def test_doc_helper():
    with pytest.raises(ValueError, match="non-empty doc"):
        doc(1, " ")
    with pytest.raises(ValueError, match="exactly one"):
        doc(1, "x", factory=list)

    @dataclasses.dataclass
    class C:
        xs: list[int] = doc([1, 2], "a list")

    a, b = C(), C()
    a.xs.append(3)
    assert b.xs == [1, 2] and field_doc(dataclasses.fields(C)[0]) == "a list"


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_describe_reads_back_equal(tmp_path, name):
    cfg = load_config(name, ["diffusion.churn_sigma_max=.inf", "track.detect.maxlat=40.0"])
    text = describe_config(cfg)
    (tmp_path / "shown.yaml").write_text(text)
    assert load_config(tmp_path / "shown.yaml") == cfg
    # a section alone is a config file too
    (tmp_path / "model.yaml").write_text(describe_config(cfg, "model"))
    assert load_config(tmp_path / "model.yaml").model == cfg.model


def test_describe_comments_every_key():
    text = describe_config(Config())
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith("#"):
            assert lines[i - 1].lstrip().startswith("# "), f"no doc comment above {line!r}"
    for key, f in config_fields():
        assert f" {field_doc(f)}\n" in text, key
    assert [ln for ln in lines if ln and not ln.startswith((" ", "#"))] == [f"{s}:" for s in SECTIONS]
    track = describe_config(Config(), "track")
    assert track.startswith("# track: ") and "\ntrack:\n  # " in track and "\nmodel:" not in track


def test_describe_unknown_section():
    with pytest.raises(ConfigError, match="unknown config section 'nope'; sections: data, synth"):
        describe_config(Config(), "nope")


def test_config_show_cli(tmp_path, capsys):
    from aeris.cli import main
    assert main(["config", "show", "--config", "tiny", "model.depth=6", "train.lr=1e-3"]) == 0
    out = capsys.readouterr().out
    (tmp_path / "shown.yaml").write_text(out)
    assert load_config(tmp_path / "shown.yaml") == load_config("tiny", ["model.depth=6", "train.lr=1e-3"])
    assert main(["config", "show", "-c", "tiny", "--section", "swipe"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# swipe: ") and "  # data-parallel degree" in out and "model:" not in out
    assert main(["config", "show", "--section", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown config section 'nope'" in err and "track" in err
    with pytest.raises(SystemExit) as e:
        main(["config", "show", "--help"])
    assert e.value.code == 0
    assert "--section" in capsys.readouterr().out
