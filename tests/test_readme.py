"""The README's config reference is checked against the schemas, so it cannot drift."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from mnist_lab.config import GROUP_OPTIONS

README = Path(__file__).resolve().parent.parent / "README.md"
ROW = re.compile(r"^\| `([a-z0-9_.]+)` \| ([^|]+) \|", re.M)


def schema_keys() -> dict[str, set[str]]:
    """Every dotted key of every group option, and the options that have it."""
    keys: dict[str, set[str]] = {}
    for group, options in GROUP_OPTIONS.items():
        for option, node in options.items():
            instance = node() if isinstance(node, type) else node
            for f in dataclasses.fields(instance):
                value = getattr(instance, f.name)
                if dataclasses.is_dataclass(value):
                    names = [f"{f.name}.{inner.name}" for inner in dataclasses.fields(value)]
                else:
                    names = [f.name]
                for name in names:
                    keys.setdefault(f"{group}.{name}", set()).add(option)
    return keys


def readme_rows() -> dict[str, str]:
    text = README.read_text()
    section = text.split("## Config reference", 1)[1].split("\n## ", 1)[0]
    return {key: options.strip() for key, options in ROW.findall(section)}


def test_every_schema_key_is_documented_with_its_options() -> None:
    rows = readme_rows()
    for key, options in schema_keys().items():
        assert key in rows, f"README's config reference lacks {key}"
        group = key.split(".")[0]
        documented = rows[key]
        expected = (
            set(GROUP_OPTIONS[group])
            if documented == "all"
            else {o.strip() for o in documented.split(",")}
        )
        assert expected == options, f"{key}: README says {documented}, schema has {options}"


def test_no_documented_key_is_unknown() -> None:
    known = set(schema_keys()) | {"seed", "experiment", "optimized_metric", "hparams_search"}
    assert set(readme_rows()) <= known


def test_readme_has_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "make run" in text and "make test" in text
