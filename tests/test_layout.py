"""The package's shape, as DEVELOPERS.md describes it: subpackages by concern whose imports run
one way, each with a docstring saying what it is for, and no module over 350 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mnist_lab"
# Bottom first: a subpackage may import only those before it (the data flow of the README,
# with the shared ground at the bottom and the commands on top).
ORDER = (
    "core",
    "config",
    "data",
    "rundir",
    "show",
    "training",
    "sweeps",
    "listing",
    "commands",
    "api",
    "__init__",
)
MAX_LINES = 350


def part_of(module: str) -> str | None:
    """``mnist_lab.rundir.locks`` -> ``rundir``; ``mnist_lab`` itself -> ``__init__``."""
    parts = module.split(".")
    if parts[0] != "mnist_lab":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def imported_parts(path: Path) -> set[str]:
    """The subpackages a module imports, function-local imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {p for a in node.names if (p := part_of(a.name))}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mnist_lab":  # from mnist_lab import listing
                found |= {p for a in node.names if (p := part_of(f"mnist_lab.{a.name}"))}
            elif p := part_of(node.module):
                found.add(p)
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def own_part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_every_module_belongs_to_a_known_part() -> None:
    assert {own_part(p) for p in modules()} == set(ORDER)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_between_subpackages_run_one_way(path: Path) -> None:
    mine = ORDER.index(own_part(path))
    upward = sorted(p for p in imported_parts(path) if ORDER.index(p) > mine)
    assert upward == [], f"{path.relative_to(PACKAGE)} imports {upward}, above {own_part(path)}"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from mnist_lab import listing\n    import mnist_lab.show.report\n"
    )
    assert imported_parts(module) == {"listing", "show"}


def test_each_subpackage_says_what_it_is_for() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and len(docstring) > 40, init


def test_no_module_is_over_350_lines() -> None:
    long = {str(p.relative_to(PACKAGE.parent)): n for p in modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}  # fmt: skip
    plugin = PACKAGE.parent / "hydra_plugins" / "mnist_lab_optuna"
    long |= {str(p.relative_to(PACKAGE.parent)): n for p in plugin.glob("*.py")
             if (n := len(p.read_text().splitlines())) > MAX_LINES}  # fmt: skip
    assert long == {}
