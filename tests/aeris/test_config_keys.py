"""Every config key is read by some code in aeris/: a key that nothing reads is dead and must go.

A key counts as read when its name is accessed as an attribute (``cfg.train.steps``, any
object) or passed to getattr/hasattr as a string, anywhere in aeris/ outside the config
modules themselves; a property of a config class (``ModelConfig.ffn_dim``) that is read
counts as reading the fields it uses. Matching by name is coarse (``forecast.steps`` is
satisfied by ``train.steps``), but a key whose name appears nowhere is certainly dead.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import typing
from dataclasses import is_dataclass
from pathlib import Path

from aeris.config import Config, config_fields

AERIS = Path(__file__).resolve().parents[2] / "aeris"


def _config_classes(cls: type = Config) -> set[type]:
    out = {cls}
    for tp in typing.get_type_hints(cls).values():
        if is_dataclass(tp):
            out |= _config_classes(tp)
    return out


def _reads(tree: ast.AST) -> set[str]:
    """Attribute names read in `tree`, plus constant names given to getattr/hasattr."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            names.add(node.attr)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            names.add(node.args[1].value)
    return names


def _property_reads(classes: set[type]) -> dict[str, set[str]]:
    """Property name -> the ``self.<field>`` names its body reads, over the config classes."""
    out: dict[str, set[str]] = {}
    for cls in classes:
        for name, member in vars(cls).items():
            if isinstance(member, property):
                tree = ast.parse(textwrap.dedent(inspect.getsource(member.fget)))
                out.setdefault(name, set()).update(
                    n.attr for n in ast.walk(tree)
                    if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self")
    return out


def code_reads() -> set[str]:
    classes = _config_classes()
    config_files = {Path(inspect.getsourcefile(c)).resolve() for c in classes}
    names: set[str] = set()
    for path in sorted(AERIS.rglob("*.py")):
        if path.resolve() not in config_files:
            names |= _reads(ast.parse(path.read_text(), filename=str(path)))
    props = _property_reads(classes)
    while True:  # a property read through another property (head_dim -> dim, heads)
        more = set().union(*(props[p] for p in props if p in names)) - names
        if not more:
            return names
        names |= more


def test_reads_collector():
    tree = ast.parse("x = cfg.train.lr\ngetattr(c, 'seed')\nhasattr(c, name)\ncfg.out = 1\n")
    assert _reads(tree) == {"train", "lr", "seed"}
    assert _property_reads(_config_classes())["head_dim"] == {"dim", "heads"}


def test_every_config_key_is_read():
    names = code_reads()
    unread = [key for key, f in config_fields() if f.name not in names]
    assert not unread, f"config keys that no code in aeris/ reads (remove them, or read them): {unread}"
