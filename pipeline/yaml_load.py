"""YAML as this pipeline reads it: safe, UTF-8, and a key given twice in one mapping is an error.

PyYAML keeps the last of two equal keys without a word, so ``epochs: 5`` further down silently wins
over ``epochs: 50``. Configs and data.yaml files are read through `read_yaml` (or `parse_yaml`), which
refuse that with one line naming the file, the line and the key, in the caller's error class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

_MERGE = "tag:yaml.org,2002:merge"


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping holding the same key twice (``<<`` merges may still be overridden)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def yaml_error_line(source: str | Path, exc: yaml.YAMLError) -> str:
    """``file: line N: problem`` for a YAML error."""
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}:" if mark else ""
    problem = getattr(exc, "problem", None) or "invalid YAML"
    return f"{source}:{where} {problem}"


def parse_yaml(text: str, source: str | Path, error: type[Exception] = ValueError) -> Any:
    """The YAML document in ``text``, or ``error`` with one line naming ``source``, the line and the problem."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise error(yaml_error_line(source, exc)) from None


def read_text(path: str | Path, error: type[Exception] = ValueError, what: str = "file") -> str:
    """A UTF-8 text file (a BOM is dropped), or ``error`` with one line: missing, unreadable or not UTF-8."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except UnicodeDecodeError as exc:
        raise error(
            f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None


def read_yaml(path: str | Path, error: type[Exception] = ValueError, what: str = "file") -> Any:
    """`read_text` then `parse_yaml`: one line in ``error`` for every way a YAML file can be unusable."""
    return parse_yaml(read_text(path, error, what), path, error)
