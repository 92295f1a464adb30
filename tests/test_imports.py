"""`import velvet` and the light CLI commands must not pay for the heavy dependencies."""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

HEAVY = ("lightning", "pytorch_lightning", "monai", "transformers", "SimpleITK", "nibabel")


def _loaded_after(code: str) -> set[str]:
    probe = (
        f"{code}\nimport sys\nprint(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in out.split()}


def test_import_velvet_is_light():
    assert _loaded_after("import velvet") == set()


def test_cli_parser_is_light():
    # building the parser imports every light command module
    assert _loaded_after("from velvet.cli.main import build_parser; build_parser()") == set()


def test_core_never_imports_lightning():
    loaded = _loaded_after(
        "import velvet.data.cache, velvet.data.transforms, velvet.data.dataset, velvet.models.config, "
        "velvet.losses, velvet.metrics.retrieval, velvet.vlm.model, velvet.vlm.load, velvet.vlm.collate, "
        "velvet.evaluation.generation"
    )
    assert "lightning" not in loaded and "pytorch_lightning" not in loaded


def test_lazy_attributes_resolve():
    import velvet

    assert callable(velvet.read_volume) and velvet.PreprocessContract.__name__ == "PreprocessContract"


def test_utils_need_only_the_standard_library():
    # velvet.utils is imported by every layer (hub, data, index): it must stay cheap and leaf-like
    probe = (
        "import sys, velvet.utils.atomic, velvet.utils.hashing, velvet.utils.paths\n"
        "print(' '.join(sorted(m for m in ('torch', 'numpy', 'tqdm') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == []


# ----------------------------------------------------------------------------------- layering
#
# The subpackage graph is read from the source with ``ast``, not from ``sys.modules``, so imports
# inside functions (the lazy ones that a runtime probe only sees when the function runs) count
# as much as module-level ones. Edges come from ``import`` / ``from ... import`` anywhere in a
# module (module level, functions, methods, ``TYPE_CHECKING`` blocks), from the lazy-export
# tables (``_LAZY = {...: "module:attr"}``) and from ``importlib.import_module("velvet...")``.

_ROOT = Path(__file__).resolve().parents[1] / "velvet"

# (importer, imported) subpackage edges tolerated although they close a cycle. Each entry needs a
# TODO naming the owner and the plan; the list is empty because there is no cycle today.
ALLOWED_CYCLE_EDGES: frozenset[tuple[str, str]] = frozenset()

# importer -> subpackages it must not reach, directly or through other subpackages
FORBIDDEN: dict[str, frozenset[str]] = {
    "velvet.utils": frozenset({"*"}),  # the shared leaf: standard library only
    "velvet.hub": frozenset({"velvet.models", "velvet.tasks", "velvet.pretraining", "velvet.cli"}),
    "velvet.data": frozenset({"velvet.models", "velvet.tasks", "velvet.pretraining", "velvet.cli"}),
    "velvet.index": frozenset({"velvet.models", "velvet.tasks", "velvet.pretraining", "velvet.cli"}),
    "velvet.losses": frozenset({"velvet.models", "velvet.pretraining", "velvet.tasks", "velvet.cli"}),
    "velvet.metrics": frozenset({"velvet.models", "velvet.pretraining", "velvet.tasks", "velvet.cli"}),
    "velvet.models": frozenset({"velvet.pretraining", "velvet.tasks", "velvet.cli"}),
    "velvet.pretraining": frozenset({"velvet.tasks", "velvet.cli"}),
    "velvet.segmentation": frozenset({"velvet.pretraining", "velvet.tasks", "velvet.cli"}),
    "velvet.tasks": frozenset({"velvet.cli"}),
    "velvet.evaluation": frozenset({"velvet.pretraining", "velvet.tasks", "velvet.cli"}),
    "velvet.grounding": frozenset({"velvet.evaluation", "velvet.pretraining", "velvet.tasks", "velvet.cli"}),
    "velvet.vlm": frozenset({"velvet.evaluation", "velvet.pretraining", "velvet.tasks", "velvet.cli"}),
}


def _subpackage(module: str) -> str:
    """``velvet.models.vision.swin`` -> ``velvet.models``; ``velvet.types`` stays itself."""
    return ".".join(module.split(".")[:2])


def _module_name(path: Path) -> str:
    parts = path.relative_to(_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _root_lazy_targets() -> dict[str, str]:
    """``velvet/__init__.py``'s lazy table: ``from velvet import X`` really imports its target."""
    table = _lazy_table(ast.parse((_ROOT / "__init__.py").read_text(encoding="utf-8")))
    return {name: target.partition(":")[0] for name, target in table}


def _lazy_table(tree: ast.Module) -> list[tuple[str, str]]:
    """(public name or "*", target module) pairs of a module-level ``_LAZY`` table."""
    out: list[tuple[str, str]] = []
    for node in tree.body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if not any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets) or node.value is None:
            continue
        if isinstance(node.value, ast.Dict):
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Constant):
                    out.append((str(key.value), str(value.value)))
        elif isinstance(node.value, ast.DictComp) and isinstance(node.value.value, ast.Constant):
            out.append(("*", str(node.value.value.value)))
    return out


def imported_modules(source: str, module: str, *, is_package: bool = False) -> list[tuple[str, int]]:
    """Every ``velvet`` module that ``source`` (the module named ``module``) imports, with the line.

    Args:
        source: the module's Python source.
        module: its dotted name (resolves relative imports).
        is_package: whether it is a package ``__init__`` (relative imports start at itself).

    Returns:
        ``(imported module, line)`` pairs, imports at any nesting level included.
    """
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    root_lazy = _root_lazy_targets() if module != "velvet" else {}
    found: list[tuple[str, int]] = [(target.partition(":")[0], 0) for _, target in _lazy_table(tree)]
    for node in ast.walk(tree):  # walk: function bodies, methods and if-blocks included
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "velvet":
                # the root is a lazy facade: `from velvet import VelvetModel` imports velvet.models
                found += [(root_lazy.get(alias.name, "velvet"), node.lineno) for alias in node.names]
            else:
                found.append((name, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
        ):
            arg = node.args[0]
            if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                # f"velvet.cli.commands.{name}": the fixed prefix names the package
                found.append((str(arg.values[0].value).rstrip("."), node.lineno))
            elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((arg.value, node.lineno))
    return [(name, line) for name, line in found if name == "velvet" or name.startswith("velvet.")]


def subpackage_graph() -> dict[str, dict[str, str]]:
    """importer subpackage -> {imported subpackage: "file:line" of one such import}.

    The root ``velvet`` package is left out: it only holds the lazy facade (its table maps each
    public name into a subpackage, and importing it loads none of them) and ``__version__``.
    """
    graph: dict[str, dict[str, str]] = {}
    for path in sorted(_ROOT.rglob("*.py")):
        module = _module_name(path)
        source = _subpackage(module)
        if source == "velvet":
            continue
        edges = graph.setdefault(source, {})
        for name, line in imported_modules(
            path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py"
        ):
            target = _subpackage(name)
            if target not in (source, "velvet"):
                edges.setdefault(target, f"{path.relative_to(_ROOT.parent)}:{line}")
    return graph


def _path(graph: dict[str, dict[str, str]], start: str, goal: str) -> list[str] | None:
    """A shortest import chain start -> ... -> goal (breadth first), or None."""
    parents: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph.get(node, {})):
            if nxt in parents:
                continue
            parents[nxt] = node
            if nxt == goal:
                chain = [nxt]
                while (prev := parents[chain[-1]]) is not None:
                    chain.append(prev)
                return chain[::-1]
            queue.append(nxt)
    return None


def _describe(graph: dict[str, dict[str, str]], chain: list[str]) -> str:
    where = "; ".join(f"{a}->{b} at {graph[a][b]}" for a, b in itertools.pairwise(chain))
    return " -> ".join(chain) + f"  ({where})"


def test_collector_sees_every_kind_of_import():
    source = (
        "from __future__ import annotations\n"
        "import velvet.data.io\n"
        "from velvet.hub import download_pretrained\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from velvet.tasks.pretrain import PretrainTask\n"
        "from . import sibling\n"
        "from ..losses import ClipLoss\n"
        "from velvet import __version__, VelvetModel\n"
        "import importlib\n"
        "_LAZY = {'X': 'velvet.metrics.retrieval:X'}\n"
        "def f():\n"
        "    from velvet.pretraining.views import make_views\n"
        "    class C:\n"
        "        def g(self):\n"
        "            import velvet.index.store\n"
        "    importlib.import_module(f'velvet.cli.commands.{f}')\n"
        "    return importlib.import_module('velvet.utils.paths')\n"
    )
    names = {name for name, _ in imported_modules(source, "velvet.models.thing")}
    assert names == {
        "velvet.data.io",
        "velvet.hub",
        "velvet.tasks.pretrain",
        "velvet.models",
        "velvet.losses",
        "velvet",
        "velvet.models.velvet",  # VelvetModel, through the root's lazy table
        "velvet.metrics.retrieval",
        "velvet.pretraining.views",
        "velvet.index.store",
        "velvet.cli.commands",
        "velvet.utils.paths",
    }


def test_no_import_cycle_between_subpackages():
    graph = subpackage_graph()
    expected = {"velvet.data", "velvet.models", "velvet.hub", "velvet.utils"}
    assert expected <= set(graph), f"the source walk missed subpackages: {sorted(expected - set(graph))}"
    pruned = {
        a: {b: at for b, at in edges.items() if (a, b) not in ALLOWED_CYCLE_EDGES}
        for a, edges in graph.items()
    }
    cycles: dict[frozenset[str], str] = {}  # one report per cycle, whichever edge found it first
    for a, edges in sorted(pruned.items()):
        for b in sorted(edges):
            back = _path(pruned, b, a)
            if back is not None:
                cycles.setdefault(frozenset(back), _describe(pruned, [a, *back]))
    assert not cycles, "import cycles between velvet subpackages:\n" + "\n".join(cycles.values())
    stale = [edge for edge in ALLOWED_CYCLE_EDGES if edge[1] not in graph.get(edge[0], {})]
    assert not stale, f"allow-listed edges that no longer exist (remove them): {stale}"


def test_layers_only_import_downwards():
    graph = subpackage_graph()
    problems = []
    for source, forbidden in FORBIDDEN.items():
        for target in sorted(set(graph) | {t for edges in graph.values() for t in edges}):
            if target == source or ("*" not in forbidden and target not in forbidden):
                continue
            chain = _path(graph, source, target)
            if chain is not None:
                problems.append(_describe(graph, chain))
    assert not problems, "forbidden imports between velvet subpackages:\n" + "\n".join(problems)
