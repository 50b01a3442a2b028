"""The README's config reference, cell by cell, against what each option composes to.

Each table's columns are a group's options; each cell is that option's default for the row's
key. Choosing the option alone on the command line must compose to exactly that: this is the
test that catches a value set in one place overriding another option's (`optimizer=sgd`
composing Adam's learning rate, say).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from mnist_lab.config import SCHEMAS
from tests.conftest import compose_config

README = Path(__file__).resolve().parent.parent / "README.md"
GROUPS = ("model", "optimizer", "data", "trainer")


def reference_tables() -> dict[str, tuple[list[str], dict[str, list[str]]]]:
    """{group: (options, {key: [cell for each option]})} from the README's config reference."""
    text = README.read_text()
    section = text.split("## Config reference", 1)[1].split("\n## ", 1)[0]
    tables = {}
    for group in GROUPS:
        block = section.split(f"### `{group}`", 1)[1].split("\n### ", 1)[0]
        rows = [line for line in block.splitlines() if line.startswith("|")]
        header = [cell.strip() for cell in rows[0].strip("|").split("|")]
        options = [cell.strip("`") for cell in header[1:-1]]
        cells = {}
        for row in rows[2:]:
            parts = [cell.strip() for cell in row.strip("|").split("|")]
            cells[parts[0].strip("`")] = parts[1 : 1 + len(options)]
        tables[group] = (options, cells)
    return tables


def documented(cell: str) -> Any:
    """A table cell as a value: `- ` is "no such key", `20` (auto) the value 20."""
    if cell == "-":
        return KeyError
    code = re.match(r"`([^`]*)`", cell)
    assert code, f"a cell without a value: {cell!r}"
    return yaml.safe_load(code.group(1))


CASES = [
    (group, option, key)
    for group, (options, cells) in reference_tables().items()
    for option in options
    for key in cells
]


@pytest.mark.parametrize("group, option, key", CASES)
def test_each_option_composes_to_its_documented_default(group: str, option: str, key: str) -> None:
    options, cells = reference_tables()[group]
    expected = documented(cells[key][options.index(option)])
    actual = _lookup(composed(group, option), key)
    assert actual == expected, f"{group}={option}: {key} is {actual!r}, README says {expected!r}"


@cache  # one composition an option, not one a cell: the cells of an option read the same
def composed(group: str, option: str) -> Any:
    """``{group}={option}`` alone on the command line, resolved, as plain containers."""
    return OmegaConf.to_container(compose_config([f"{group}={option}"]), resolve=True)


def _lookup(node: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return KeyError
        node = node[part]
    return node


def test_every_option_and_key_is_documented() -> None:
    tables = reference_tables()
    for group, options in SCHEMAS.items():
        documented_options, cells = tables[group]
        assert set(documented_options) == set(options), group
        for option in options:
            cfg = compose_config([f"{group}={option}"])
            leaves = OmegaConf.to_container(cfg[group])
            keys = {f"{group}.{k}" for k in _flat(leaves)}
            listed = {k for k, row in cells.items() if row[documented_options.index(option)] != "-"}
            assert keys == listed, f"{group}={option}: composed {keys ^ listed} differ"


def _flat(node: Any, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return {prefix}
    return set().union(*(_flat(v, f"{prefix}.{k}" if prefix else k) for k, v in node.items()))


def test_the_default_run_is_the_first_option_of_each_group() -> None:
    default = compose_config([])
    chosen = compose_config([f"{g}={reference_tables()[g][0][0]}" for g in GROUPS])
    assert OmegaConf.to_container(default, resolve=True) == OmegaConf.to_container(
        chosen, resolve=True
    )


def test_readme_has_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "make run" in text and "make test" in text
