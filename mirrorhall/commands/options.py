"""argparse options generated from a frozen dataclass: one option per field.

A command is a frozen dataclass whose fields carry attribute docstrings. Each field becomes one
option: the flag from the field name (underscores -> dashes), the parser from the type, the
default from the default, the help from the docstring, and the allowed values where the set is
closed. A field whose type is itself a dataclass (a library config such as ``TrainConfig``) is
flattened: its fields become options of the same command. After parsing, ``build`` turns the
namespace back into the dataclass, constructing the inner configs first; a ``ValueError`` raised
by a config's own validation becomes a ``ConfigError`` (one line, exit 2).

Type -> option:

- ``bool``: ``--name`` (default False) or ``--no-name`` (default True).
- ``int``, ``int | None``: a non-negative integer (every count, seed and size of this project).
- ``float``: a number. ``str``, ``str | None``: text.
- ``tuple[str, ...]``: a repeatable option (``--prompt A --prompt B``).
- ``tuple[float, ...]``: one option taking several numbers.

Written on argparse rather than taking a dependency (tyro, simple-parsing): the whole mapping is
this module, the existing flag names, defaults and messages stay exactly as they were, and the
commands' options can be added on first use, so that ``mirrorhall run`` never imports torch.

Per-field settings (``choices``, ``positional``, ``metavar``, ``help``) come from
``dataclasses.field(metadata=...)`` (see ``option``) or, for a library config whose fields this
package does not own, from the ``Opt`` overrides a command passes in.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass
from functools import cache
from typing import Any

from mirrorhall.errors import user_input


@dataclass(frozen=True)
class Opt:
    """How one field shows on the command line, beyond what its type and docstring say."""

    help: str | None = None
    """Help text (default: the field's attribute docstring)."""
    choices: Callable[[], Iterable[str]] | tuple[str, ...] | None = None
    """The closed set of allowed values, shown in ``--help``; a callable is asked when the
    parser is built. The config's own validation refuses anything else, with its own message."""
    positional: bool = False
    metavar: str | None = None
    hidden: bool = False
    """Not an option at all (the field keeps its default)."""


def option(default: Any = MISSING, **opt) -> Any:
    """A dataclass field with command-line settings: ``option(None, choices=("a", "b"))``."""
    kw = {} if default is MISSING else {"default": default}
    return dataclasses.field(metadata={"cli": Opt(**opt)}, **kw)


# --- value parsers -----------------------------------------------------------------------------


def count(flag: str) -> Callable[[str], int]:
    """A non-negative integer, refused with a message naming ``flag``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{flag} must be >= 0, got {value}")
        return value

    return parse


def number(flag: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}") from None

    return parse


# --- dataclass introspection -------------------------------------------------------------------


@cache
def field_docs(cls: type) -> Mapping[str, str]:
    """{field: its attribute docstring} of a dataclass (and its dataclass bases), joined to one line."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):  # no source (frozen app): help without docs
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _settings(f: dataclasses.Field, overrides: Mapping[str, Opt]) -> Opt:
    return overrides.get(f.name) or f.metadata.get("cli") or Opt()


def _unwrap_optional(tp) -> tuple[Any, bool]:
    """(T, True) for ``T | None``; (tp, False) otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "none"
    return str(value)


# --- parser ------------------------------------------------------------------------------------


def add_options(parser: argparse.ArgumentParser, cls: type,
                overrides: Mapping[str, Opt] | None = None, _seen: set[str] | None = None) -> None:
    """Add one option per field of the dataclass ``cls`` (nested dataclasses flattened)."""
    overrides = overrides or {}
    seen = set() if _seen is None else _seen
    docs = field_docs(cls)
    for f, tp in _fields(cls):
        if dataclasses.is_dataclass(tp):
            add_options(parser, tp, overrides, seen)
            continue
        opt = _settings(f, overrides)
        if opt.hidden:
            continue
        if f.name in seen:  # a command field shadowing a field of its library config: a bug
            raise TypeError(f"{cls.__name__}.{f.name}: two fields would give the same option")
        seen.add(f.name)
        flag = "--" + f.name.replace("_", "-")
        base, _ = _unwrap_optional(tp)  # None is only ever a default: no flag spells it
        default = _default(f)
        doc = (opt.help or docs.get(f.name, "")).rstrip().replace("%", "%%")  # argparse %-formats help
        choices = tuple(opt.choices() if callable(opt.choices) else opt.choices or ())
        text = [doc] if doc else []
        if choices:
            text.append(f"One of: {', '.join(choices)}.")
        kw: dict[str, Any] = {"dest": f.name}
        if base is bool:
            if default is True:
                flag = "--no-" + f.name.replace("_", "-")
                kw["action"] = "store_false"
                text.append(f"(default: on; {flag} turns it off)")
            else:
                kw["action"] = "store_true"
                text.append("(default: off)")
            parser.add_argument(flag, help=" ".join(text), default=default, **kw)
            continue
        if base is int:
            kw["type"] = count(flag)
        elif base is float:
            kw["type"] = number(flag)
        elif base is str:
            kw["type"] = str
        elif typing.get_origin(base) is tuple and typing.get_args(base)[1:] == (Ellipsis,):
            item = typing.get_args(base)[0]
            if item is str:
                kw["action"] = "append"  # repeatable; None when never given -> the field's default
            elif item is float:
                kw["type"], kw["nargs"] = number(flag), "+"
            else:
                raise TypeError(f"{cls.__name__}.{f.name}: no option for {tp!r}")
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no option for {tp!r}")
        metavar = opt.metavar or ("{" + ",".join(choices) + "}" if 0 < len(choices) <= 6
                                  else f.name.upper())
        if opt.positional:
            text.append("" if default is MISSING else f"(default: {_shown(default)})")
            parser.add_argument(f.name, metavar=metavar, help=" ".join(text).strip(),
                                **({"nargs": "?", "default": default} if default is not MISSING else {}),
                                **{k: v for k, v in kw.items() if k != "dest"})
            continue
        if default is MISSING:
            kw["required"] = True
            text.append("(required)")
        else:
            text.append(f"(default: {_shown(default)})")
            kw["default"] = None if kw.get("action") == "append" else default
        parser.add_argument(flag, metavar=metavar, help=" ".join(text), **kw)


def build(cls: type, values: Mapping[str, Any] | argparse.Namespace):
    """The dataclass ``cls`` from parsed ``values`` (inner dataclasses first); the configs'
    own validation errors become ``ConfigError``."""
    if isinstance(values, argparse.Namespace):
        values = vars(values)
    kwargs = {}
    for f, tp in _fields(cls):
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = build(tp, values)
        elif f.name in values:
            value = values[f.name]
            if value is None and typing.get_origin(_unwrap_optional(tp)[0]) is tuple:
                continue  # a repeatable option never given: the field's default
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
    with user_input():
        return cls(**kwargs)


def to_json(obj) -> dict:
    """A command's config as JSON (inner configs nested), to save beside what it writes."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if not f.init:
            continue
        if dataclasses.is_dataclass(v):
            v = to_json(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out
