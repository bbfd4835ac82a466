"""Typed configuration: YAML files -> nested dataclasses, with dotted command-line overrides.

A config file is a YAML mapping whose top-level keys are the sections of `Config`. A file may
name others to start from with ``base: [other.yaml, ...]`` (paths relative to the file);
later files and then overrides win. Overrides are ``section.key=value`` strings whose value
is parsed as YAML (``model.dim=64``, ``data.levels=[500,850]``, ``train.lr=2e-4``).
Unknown sections or keys, and values of the wrong type, are errors that name the key.

Each section's dataclass lives beside the code it configures (``aeris.data.config``,
``aeris.model.config``, ...); this module declares the root `Config` from them and loads it.
Those modules import nothing heavy (no torch, numpy, xarray), so importing this one is cheap.
Every field carries a one-line doc (`aeris.confdoc.doc`); `describe_config` (`aeris config
show`) prints a config as YAML with the docs as comments.
"""

from __future__ import annotations

import copy
import os
import types
import typing
from dataclasses import Field, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from aeris.confdoc import doc, field_doc
from aeris.data.config import DataConfig, SynthConfig
from aeris.diffusion.config import DiffusionConfig
from aeris.evaluate.config import TrackConfig
from aeris.forecast.config import ForecastConfig
from aeris.model.config import ModelConfig
from aeris.train.config import TrainConfig

__all__ = ["Config", "ConfigError", "SwipeConfig", "load_config", "apply_overrides", "from_dict",
           "to_dict", "dump_config", "describe_config", "config_fields", "CONFIG_DIR", "SECTIONS"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A config that cannot be loaded: unknown key, wrong type, unreadable file."""


@dataclass
class SwipeConfig:
    """The SWiPe mesh: data x pipeline x window(y, x) x sequence parallel degrees."""

    dp: int = doc(1, "data-parallel degree (model replicas)")
    pp: int = doc(1, "pipeline-parallel degree (stages of consecutive blocks)")
    wy: int = doc(1, "window-parallel degree along latitude (rows of windows)")
    wx: int = doc(1, "window-parallel degree along longitude (columns of windows)")
    sp: int = doc(1, "sequence-parallel degree (Ulysses: the tokens of a window split over ranks; divides heads)")
    backend: str = doc("auto", "torch.distributed backend: auto | gloo | nccl | xccl | ccl")

    @property
    def world_size(self) -> int:
        return self.dp * self.pp * self.wy * self.wx * self.sp


@dataclass
class Config:
    """The whole run configuration: one dataclass per section."""

    data: DataConfig = doc(text="where the data is and which channels the model sees", factory=DataConfig)
    synth: SynthConfig = doc(text="the embedded synthetic reanalysis (`aeris data synth`)", factory=SynthConfig)
    swipe: SwipeConfig = doc(text="the SWiPe mesh: dp x pp x wy x wx x sp ranks", factory=SwipeConfig)
    model: ModelConfig = doc(text="shape and switches of the Swin diffusion transformer", factory=ModelConfig)
    diffusion: DiffusionConfig = doc(text="TrigFlow diffusion: training noise, loss weights, sampler",
                                     factory=DiffusionConfig)
    train: TrainConfig = doc(text="optimiser, schedule, batch, EMA, logging and checkpoints of `aeris train`",
                             factory=TrainConfig)
    forecast: ForecastConfig = doc(text="`aeris forecast` and `aeris forecast-stability`: checkpoint, "
                                        "initial times, lead, members, output", factory=ForecastConfig)
    track: TrackConfig = doc(text="`aeris track`: cyclone detection, stitching and best-track verification",
                             factory=TrackConfig)


SECTIONS = tuple(f.name for f in fields(Config))


def config_fields(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, Field]]:
    """Every field of dataclass `cls` and of the dataclasses nested in it, depth first:
    (dotted key, field), a nested dataclass before its own fields."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        key = prefix + f.name
        yield key, f
        if is_dataclass(hints[f.name]):
            yield from config_fields(hints[f.name], key + ".")


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


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config file (or the defaults when None) and apply dotted overrides."""
    data = _read_yaml(resolve_config_path(path)) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    return from_dict(Config, data)


def dump_config(cfg: Any) -> str:
    """Plain YAML of a config (what run directories keep as config.yaml)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# ---- documented YAML -------------------------------------------------------------------------
def _flow(value: Any) -> str:
    """One-line YAML of a plain value (flow style: lists as [a, b], mappings as {k: v})."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31 - 1, sort_keys=False)
    return text.removesuffix("\n...\n").rstrip("\n")


def _describe(obj: Any, indent: str) -> list[str]:
    lines = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        lines.append(f"{indent}# {field_doc(f)}")
        if is_dataclass(value):
            lines += [f"{indent}{f.name}:", *_describe(value, indent + "  ")]
        else:
            lines.append(f"{indent}{f.name}: {_flow(to_dict(value))}")
    return lines


def describe_config(cfg: Config, section: str | None = None) -> str:
    """`cfg` as YAML with each field's doc as a comment on the line above it, section by section,
    or only `section`. The text is a config file: `load_config` reads it back to an equal config
    (to the same `section`, when one is given)."""
    if section is not None and section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r}; sections: {', '.join(SECTIONS)}")
    blocks = []
    for f in fields(cfg):
        if section in (None, f.name):
            blocks.append("\n".join([f"# {f.name}: {field_doc(f)}", f"{f.name}:",
                                      *_describe(getattr(cfg, f.name), "  ")]))
    return "\n\n".join(blocks) + "\n"
