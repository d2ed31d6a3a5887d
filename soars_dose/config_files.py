"""Packaged data files and the user files that extend them (YAML with line numbers).

The one reader behind the alias table (:mod:`soars_dose.names`), the dose
constraints, the surface-Dice tolerances and the plausible OAR volumes
(:mod:`soars_dose.analysis`): a packaged file in ``soars_dose/data`` is read
first, then a user file of the same format extends or overrides it. Every
problem raises :class:`~soars_dose.errors.InputError` naming the file and,
where YAML knows it, the line.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError
from .inputs import require_file

__all__ = ["packaged_text", "user_text", "load_yaml", "YamlReader"]


def packaged_text(name: str) -> tuple[str, str]:
    """Text and display name of the packaged data file ``soars_dose/data/<name>``."""
    try:
        res = importlib.resources.files("soars_dose").joinpath("data", name)
        return res.read_text(encoding="utf-8"), str(res)
    except (NotADirectoryError, FileNotFoundError, TypeError, AttributeError):
        # a namespace package under an editable install: read from the file system
        path = Path(__file__).resolve().parent / "data" / name
        return path.read_text(encoding="utf-8"), str(path)


def user_text(path: "str | Path", what: str) -> tuple[str, str]:
    """Text and display name of a user's file; ``what`` names it in messages ("alias file").

    Raises
    ------
    InputError
        The file is missing, a folder, unreadable or not UTF-8 text.
    """
    p = require_file(path, f"a YAML {what}", missing=f"{path}: {what} not found; check the path.")
    try:
        return p.read_text(encoding="utf-8"), str(p)
    except FileNotFoundError:
        raise InputError(f"{p}: {what} not found; check the path.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read the {what} ({exc}).") from None


def load_yaml(text: str, source: str, hint: str = "") -> Any:
    """``yaml.safe_load`` whose errors name ``source``, the line and column, and ``hint``."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise InputError(f"{source}: not valid YAML: {problem}{at}. "
                         f"{hint or 'Fix the syntax (check indentation, colons and quotes).'}"
                         ) from None
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML: {exc}") from None


class YamlReader:
    """Walks a composed YAML node tree, keeping line numbers for messages."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.loader = yaml.SafeLoader(text)
        try:
            self.root = self.loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = exc.problem or exc.context or "syntax error"
            raise InputError(f"{source}: not valid YAML: {problem}{at}. "
                             "Fix the syntax (check indentation, colons and quotes).") from None
        except yaml.YAMLError as exc:
            raise InputError(f"{source}: not valid YAML: {exc}") from None

    def fail(self, node: yaml.Node | None, problem: str) -> InputError:
        at = f" (line {node.start_mark.line + 1})" if node is not None else ""
        return InputError(f"{self.source}{at}: {problem}")

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping (key: value lines)")
        out, seen = [], {}
        for knode, vnode in node.value:
            key = self.string(knode, f"a key in {what}")
            if key in seen:
                raise self.fail(knode, f"duplicate key {key!r} in {what} "
                                       f"(first at line {seen[key] + 1}); keep one")
            seen[key] = knode.start_mark.line
            out.append((key, knode, vnode))
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list ([a, b] or '- a' lines)")
        return list(node.value)

    def scalar(self, node: yaml.Node, what: str):
        """Typed value of a scalar (true/false/numbers resolved)."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value, not a list or mapping")
        try:
            return self.loader.construct_object(node)
        except yaml.YAMLError as exc:
            raise self.fail(node, f"{what}: cannot read the value ({exc})") from None

    def string(self, node: yaml.Node, what: str) -> str:
        """A scalar as the text written: names such as ON, NO or 1 stay text."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value, not a list or mapping")
        value = str(node.value).strip()
        if not value or self.is_null(node):
            raise self.fail(node, f"{what} must be a non-empty text")
        return value

    @staticmethod
    def is_null(node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"
