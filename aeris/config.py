"""Typed configuration: YAML files -> nested dataclasses, with dotted command-line overrides.

A config file is a YAML mapping whose top-level keys are the sections of `Config`. A file may
name others to start from with ``base: [other.yaml, ...]`` (paths relative to the file);
later files and then overrides win. Overrides are ``section.key=value`` strings whose value
is parsed as YAML (``model.dim=64``, ``data.levels=[500,850]``, ``train.lr=2e-4``).
Unknown sections or keys, and values of the wrong type, are errors that name the key.

Each section's dataclass lives beside the code it configures (``aeris.data.config``,
``aeris.model.config``, ...); this module only assembles and loads them.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from aeris.data.config import DataConfig, SynthConfig

__all__ = ["Config", "ConfigError", "SwipeConfig", "load_config", "apply_overrides",
           "from_dict", "to_dict", "CONFIG_DIR"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A config that cannot be loaded: unknown key, wrong type, unreadable file."""


@dataclass
class SwipeConfig:
    """The SWiPe mesh: data x pipeline x window(y, x) x sequence parallel degrees."""

    dp: int = 1
    pp: int = 1
    wy: int = 1
    wx: int = 1
    sp: int = 1
    backend: str = "auto"  # auto | gloo | nccl | xccl | ccl

    @property
    def world_size(self) -> int:
        return self.dp * self.pp * self.wy * self.wx * self.sp


def _section(name: str):
    """Import a section dataclass lazily, so that a half-built package does not break loading."""
    import importlib
    mod, cls = name.rsplit(".", 1)
    return getattr(importlib.import_module(mod), cls)


def _optional_sections() -> dict[str, type]:
    out = {}
    for key, path in {
        "model": "aeris.model.config.ModelConfig",
        "diffusion": "aeris.diffusion.config.DiffusionConfig",
        "train": "aeris.train.config.TrainConfig",
        "forecast": "aeris.forecast.config.ForecastConfig",
        "track": "aeris.evaluate.config.TrackConfig",
    }.items():
        try:
            out[key] = _section(path)
        except ModuleNotFoundError as e:
            # a section whose module is not part of this installation is simply absent; any
            # other import failure is a real error and must not hide the section silently
            if e.name != path.rsplit(".", 1)[0]:
                raise
            continue
    return out


def _make_config_class() -> type:
    extra = [(k, t, field(default_factory=t)) for k, t in _optional_sections().items()]
    return dataclasses.make_dataclass(
        "Config",
        [("data", DataConfig, field(default_factory=DataConfig)),
         ("synth", SynthConfig, field(default_factory=SynthConfig)),
         ("swipe", SwipeConfig, field(default_factory=SwipeConfig)),
         *extra],
        namespace={"__doc__": "The whole run configuration: one dataclass per section."},
    )


_CONFIG_CLASS: type | None = None


def Config(**kwargs):  # noqa: N802 - behaves as the class constructor
    """Build the root config dataclass (sections are discovered at first use)."""
    return config_class()(**kwargs)


def config_class() -> type:
    global _CONFIG_CLASS
    if _CONFIG_CLASS is None:
        _CONFIG_CLASS = _make_config_class()
    return _CONFIG_CLASS


# ---- conversion ------------------------------------------------------------------------------
def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {value!r}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {sorted(prefix + k for k in unknown)}; "
            f"valid keys{' of ' + where if where else ''}: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def to_dict(cfg: Any) -> Any:
    """Dataclass -> plain nested dict (YAML/JSON-serialisable)."""
    if is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


# ---- loading ---------------------------------------------------------------------------------
def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} includes itself via 'base'")
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    bases = data.pop("base", [])
    bases = [bases] if isinstance(bases, str) else bases
    merged: dict = {}
    for b in bases:
        merged = _deep_merge(merged, _read_yaml(path.parent / b, seen + (path,)))
    return _deep_merge(merged, data)


def resolve_config_path(name: str | os.PathLike) -> Path:
    """A path as given, or a bare name looked up in ``configs/`` (``tiny`` -> configs/tiny.yaml)."""
    p = Path(name)
    if p.exists():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if cand.exists():
            return cand
    raise ConfigError(f"config {str(name)!r} not found (looked in . and {CONFIG_DIR})")


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict."""
    data = copy.deepcopy(data)
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like section.key=value")
        key, raw = ov.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {ov!r}: cannot parse value: {e}") from e
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return data


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None):
    """Load a config file (or the defaults when None) and apply dotted overrides."""
    data = _read_yaml(resolve_config_path(path)) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    return from_dict(config_class(), data)


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
