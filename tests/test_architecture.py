"""The layout's promises: imports point one way (entry points -> families -> core), no cycles.

Imports inside functions count: a lazy import hides a cycle from Python, not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rnnlab"

# Rank of each part of the package: a module may import only ranks at or below its own, and
# within a rank only the packages listed in SAME_RANK (so no two families lean on each other).
ENTRY = {"cli", "serve", "__main__"}
FAMILIES = {"training", "experiments", "seq2seq"}
FRONT = {"api"}
SAME_RANK = {
    "experiments": {"training"},
    "seq2seq": {"training"},
    "__main__": {"cli"},
    "cli": {"serve"},  # `rnnlab serve` starts the server; the server never imports the CLI
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every rnnlab module `path` imports, at any depth of its code."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from rnnlab.x import y` imports the module rnnlab.x.y when there is one, else
            # the name y of rnnlab.x.
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [n for n in subs if n in known] or [node.module]
        else:
            continue
        out.update(n for n in names if n in known)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(p, known) - {m} for m, p in mods.items()}


def part(module: str) -> str:
    """The top-level part of rnnlab a module belongs to: a package name, or 'core'."""
    pieces = module.split(".")
    if len(pieces) == 1:
        return "init"
    head = pieces[1]
    if head in ENTRY or head in FAMILIES or head in FRONT:
        return head
    return "core"


def rank(p: str) -> int:
    if p in ("core",):
        return 0
    if p in FAMILIES:
        return 1
    if p in FRONT or p == "init":
        return 2
    return 3


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        color[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if color.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in color and (found := visit(m)):
                return found
        stack.pop()
        color[n] = 2
        return None

    for n in sorted(g):
        if n not in color and (found := visit(n)):
            return found
    return None


def test_no_import_cycle_even_inside_functions():
    # The package's own __init__ is imported first by every `import rnnlab.x`: edges to it
    # from inside the package would be cycles too.
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_point_from_entry_points_to_families_to_core(module):
    src = part(module)
    for target in sorted(graph()[module]):
        dst = part(target)
        if src == dst or dst == "core":
            continue
        if src == "init":
            assert dst in FRONT, f"rnnlab/__init__ imports {target}: export the API only"
            continue
        assert dst != "init", f"{module} imports the package root: import the module it needs"
        assert rank(dst) <= rank(src), f"{module} ({src}) imports {target} ({dst}) upwards"
        if rank(dst) == rank(src):
            assert dst in SAME_RANK.get(src, set()), f"{module} imports the family {target}"


def test_nothing_outside_cli_imports_it():
    offenders = [
        m
        for m, deps in graph().items()
        if part(m) not in ("cli", "__main__") and any(part(d) == "cli" for d in deps)
    ]
    assert offenders == []


# -- one way to start a run: front doors parse, call and print --------------------------------

# Calls that seed the global generators: only rnnlab.seeding makes them.
GLOBAL_SEEDS = {("torch", "manual_seed"), ("random", "seed"), ("np.random", "seed")}
GLOBAL_SEEDS |= {("torch.cuda", "manual_seed"), ("numpy.random", "seed")}
# What starts or builds a run: only the families' start functions (training/lm.py,
# seq2seq/runs.py) call these, through rnnlab.training.start.
RUN_BUILDERS = {"Trainer", "lm_trainer", "open_run", "LanguageModelFamily", "Seq2SeqFamily"}
RUN_BUILDERS |= {"seed_everything", "seed_rank"}


def called_names(path: Path) -> set[tuple[str, str]]:
    """(owner, name) of every call in a module: `torch.manual_seed(0)` -> ("torch", ...)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        if isinstance(fn, ast.Name):
            out.add(("", fn.id))
        elif isinstance(fn, ast.Attribute):
            out.add((ast.unparse(fn.value), fn.attr))
    return out


def test_only_the_seeding_module_seeds_the_global_generators():
    offenders = sorted(
        f"{m}: {owner}.{name}"
        for m, path in modules().items()
        if m != "rnnlab.seeding"
        for owner, name in called_names(path)
        if (owner, name) in GLOBAL_SEEDS
    )
    assert offenders == []


@pytest.mark.parametrize(
    "module", sorted(m for m in modules() if part(m) in ENTRY | FRONT and m != "rnnlab.__main__")
)
def test_front_doors_neither_seed_nor_build_trainers(module):
    calls = called_names(modules()[module])
    seeds = {c for c in calls if c in GLOBAL_SEEDS}
    builds = {name for _, name in calls if name in RUN_BUILDERS}
    assert not seeds and not builds, f"{module} seeds or builds a run itself: {seeds or builds}"


def test_the_front_door_check_sees_a_seed(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\ntorch.manual_seed(0)\nTrainer(1)\n", encoding="utf-8")
    calls = called_names(bad)
    assert ("torch", "manual_seed") in calls and ("", "Trainer") in calls
