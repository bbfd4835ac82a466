"""The boundaries of the code base, read from the source with `ast` (docs/architecture.md).

Every ``import`` counts, at module level or inside a function: a circle hidden by a
function-level import is still a circle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support import REPO

PACKAGES = ("aeris", "swipe")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            parts = list(p.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name lives in (``aeris.train.trainer.Trainer`` ->
    ``aeris.train.trainer``), None for other libraries."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> list[tuple[str, str, bool, int]]:
    """(imported project module, imported name or '', inside a function?, line) of ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    target = _resolve(a.name)
                    if target:
                        out.append((target, "", in_function, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for a in child.names:
                    full = f"{base}.{a.name}"
                    target = full if full in MODULES else _resolve(base)
                    if target:
                        out.append((target, "" if full in MODULES else a.name, in_function, child.lineno))
            visit(child, nested)

    visit(tree, False)
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycle_between_modules():
    edges = {m: {t for t, *_ in imps if t != m} for m, imps in GRAPH.items()}
    assert _cycles(edges) == []


def _is_config(m: str) -> bool:
    """The configuration layer: the root `aeris.config` and the section dataclasses that live
    beside the code they configure (``aeris.<package>.config``)."""
    return m in ("aeris.config", "aeris.confdoc") or (m.startswith("aeris.") and m.endswith(".config")
                                                     and not m.startswith("aeris.cli."))


def test_no_import_cycle_between_packages():
    """Sub-packages (aeris.data, aeris.train, ..., swipe) form a layered graph too (the
    configuration layer aside: every package reads its section, the root assembles them)."""
    def pkg(m: str) -> str:
        parts = m.split(".")
        return ".".join(parts[:2]) if parts[0] == "aeris" and len(parts) > 2 else parts[0] if parts[0] == "swipe" else m
    edges: dict[str, set[str]] = {}
    for m, imps in GRAPH.items():
        for t, *_ in imps:
            if pkg(t) != pkg(m) and not _is_config(m) and not _is_config(t):
                edges.setdefault(pkg(m), set()).add(pkg(t))
    assert _cycles(edges) == []


def test_configuration_is_a_leaf_layer():
    """Config modules import only config modules and pure parsers (no torch, no stores)."""
    allowed = {"aeris.evaluate.commands", "aeris.data.lexicon", "aeris.train.guard"}
    bad = [f"{m}:{line} imports {t}" for m, imps in GRAPH.items() if _is_config(m)
           for t, _, _, line in imps if not _is_config(t) and t not in allowed]
    assert bad == []


@pytest.mark.parametrize("importer, forbidden", [
    ("swipe", "aeris"),              # the parallelism knows nothing about weather
    ("aeris.forecast", "aeris.train"),  # checkpoint reading and model building live below both
    ("aeris.model", "swipe.comm"),   # the model contains no communication code
    ("aeris.model", "torch.distributed"),
])
def test_layer_boundaries(importer, forbidden):
    bad = []
    for m, path in MODULES.items():
        if m != importer and not m.startswith(importer + "."):
            continue
        for t, _, _, line in GRAPH[m]:
            if t == forbidden or t.startswith(forbidden + "."):
                bad.append(f"{m}:{line} imports {t}")
        if not forbidden.startswith(PACKAGES):  # a third-party module: read the source
            if re.search(rf"^\s*(import|from)\s+{re.escape(forbidden)}\b", path.read_text(), re.M):
                bad.append(f"{m} imports {forbidden}")
    assert bad == []


def test_no_private_names_across_modules():
    bad = [f"{m}:{line} imports {name} from {t}" for m, imps in GRAPH.items()
           for t, name, _, line in imps if name.startswith("_") and not name.startswith("__") and t != m]
    assert bad == []


def test_project_imports_at_module_level_outside_the_cli():
    """Only the CLI imports project modules inside functions (so that `aeris --help` starts
    without loading torch); elsewhere a function-level import would hide a circle."""
    bad = [f"{m}:{line} imports {t} inside a function" for m, imps in GRAPH.items()
           if not m.startswith("aeris.cli") for t, _, inside, line in imps if inside]
    assert bad == []


def test_the_graph_sees_function_level_imports():
    """The walker is not blind to imports inside functions (the CLI has many)."""
    assert any(inside for t, _, inside, _ in GRAPH["aeris.cli.train"])


# ---- documentation ------------------------------------------------------------------------------
TEXT_FILES = [p for top in ("aeris", "swipe", "benchmarks", "configs", "data", "notebooks", "tests")
              for p in (REPO / top).rglob("*") if p.suffix in (".py", ".yaml", ".ipynb", ".sh", ".md")
              and "__pycache__" not in p.parts] + [REPO / n for n in ("Makefile", "pyproject.toml", "README.md")]
SPEC_NAMES = re.compile(r"\.\./shared|shared/spec|\b(SWIPE|AERIS|DATA|EVALUATION|ENVIRONMENT|ARCHITECTURE)\.md\b")


def test_no_reference_to_files_outside_the_repository():
    this = Path(__file__).resolve()
    bad = [f"{p.relative_to(REPO)}:{i}" for p in TEXT_FILES if p.resolve() != this
           for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if SPEC_NAMES.search(line)]
    assert bad == []


def test_every_cited_docs_section_exists():
    """A citation (docs/ + page + `.md, "Heading"`) names a page of docs/ and one of its headings."""
    cite = re.compile(r'docs/(\w+\.md)(?:, \\?"([^"\\]+)\\?")?')
    found, bad = 0, []
    for p in TEXT_FILES + sorted((REPO / "docs").glob("*.md")):
        for page, heading in cite.findall(p.read_text(errors="replace")):
            found += 1
            doc = REPO / "docs" / page
            if not doc.exists():
                bad.append(f"{p.relative_to(REPO)} cites missing {page}")
            elif heading and not re.search(rf"^#+ {re.escape(heading)}\s*$", doc.read_text(), re.M):
                bad.append(f"{p.relative_to(REPO)} cites missing heading {page}: {heading!r}")
    assert found > 20 and bad == []


def test_readme_layout_matches_the_tree():
    """The README's layout block names every top-level folder, every aeris package and every
    test folder, and nothing that does not exist."""
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("## Layout of the repository"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    named: dict[str, set[str]] = {"": set()}
    parent = ""
    for line in block.splitlines():
        m = re.match(r"^( *)([\w.-]+)/\s", line)
        if not m:
            continue
        if m.group(1):
            named.setdefault(parent, set()).add(m.group(2))
        else:
            parent = m.group(2)
            named[""].add(parent)

    def dirs(path: Path) -> set[str]:
        return {p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
                and any(p.rglob("*.*"))}

    tracked = {p.split("/")[0] for p in __import__("subprocess").run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split() if "/" in p}
    assert named[""] == {t for t in tracked if not t.startswith(".")}
    assert named["aeris"] == {p.name for p in (REPO / "aeris").iterdir() if (p / "__init__.py").exists()}
    assert named["tests"] == dirs(REPO / "tests")
