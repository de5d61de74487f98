"""Checking values read from files where they enter: types, ranges and finiteness.

Every file mirrorhall reads (probe JSON, checkpoint.json, a dataset manifest and its shards,
safetensors weights) is well-formed or refused when read, never half-used: a hostile value (a
string where a number belongs, a position outside the grid, a NaN label) is refused with one
line naming the file, the field and the fix, as the user error the file's reader asks for. What
passes is safe for every reader downstream, so no reader re-checks.

A ``Source`` is one file being read: ``src.field(data, "summary", OBJECT)`` returns the value or
raises ``src.error`` with ``"{file}: 'summary' must be a JSON object, got 'x'; {fix}"``.
Array checks are vectorised (``array_in_range``, ``all_finite``), for shards of many rows.

This module imports nothing from the project but ``errors``, so every layer may use it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from mirrorhall.errors import ConfigError

_MISSING = object()


@dataclass(frozen=True)
class Kind:
    """A JSON value kind: a name for messages and a test."""

    name: str
    test: Callable[[Any], bool]

    def __call__(self, value) -> bool:
        return self.test(value)

    def __or__(self, other: Kind) -> Kind:
        return Kind(f"{self.name} or {other.name}", lambda v: self.test(v) or other.test(v))


def is_int(value) -> bool:
    """A true integer (not a bool), as JSON gives it."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite real number (an int or a float, not a bool) that fits a float."""
    if is_int(value):
        return abs(value) < 2**1023
    return isinstance(value, float) and math.isfinite(value)


INT = Kind("an integer", is_int)
COUNT = Kind("a non-negative integer", lambda v: is_int(v) and v >= 0)
NUMBER = Kind("a finite number", is_number)
TEXT = Kind("a text", lambda v: isinstance(v, str))
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
NULL = Kind("null", lambda v: v is None)
OBJECT = Kind("a JSON object", lambda v: isinstance(v, dict))
LIST = Kind("a list", lambda v: isinstance(v, list))


def list_of(kind: Kind, length: int | None = None) -> Kind:
    """A list whose every item is ``kind`` (of ``length`` items when given)."""
    size = "" if length is None else f"{length} "
    return Kind(f"a list of {size}{kind.name} items",
                lambda v: isinstance(v, list) and (length is None or len(v) == length) and all(map(kind.test, v)))


def short(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: messages stay one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Source:
    """One file being read: every refusal names ``path``, raises ``error`` and ends with ``fix``.

    With ``path`` None the message is the bare finding, for a caller that adds the file and the
    fix itself (a shard row is checked before its reader knows how to name it).
    """

    path: Any
    error: type[Exception] = ConfigError
    fix: str = ""

    def fail(self, what: str) -> NoReturn:
        where = "" if self.path is None else f"{self.path}: "
        raise self.error(f"{where}{what}" + (f"; {self.fix}" if self.fix else ""))

    def check(self, value, kind: Kind, name: str):
        """``value`` if it is ``kind``; else a refusal naming ``name``."""
        if not kind(value):
            self.fail(f"{name} must be {kind.name}, got {short(value)}")
        return value

    def field(self, data: dict, key: str, kind: Kind, default=_MISSING, where: str = ""):
        """``data[key]`` checked as ``kind``; ``default`` when absent (absent and no default: refused)."""
        name = f"{where}{key!r}"
        if key not in data:
            if default is _MISSING:
                self.fail(f"{name} is missing")
            return default
        return self.check(data[key], kind, name)

    def int_in_range(self, value, lo: int, hi: int, name: str) -> int:
        if not is_int(value) or not lo <= value <= hi:
            self.fail(f"{name} must be an integer in {lo}..{hi}, got {short(value)}")
        return value

    def array_in_range(self, array, lo, hi, name: str) -> np.ndarray:
        """``array`` if every value lies in ``lo..hi`` (inclusive); else a refusal naming the first
        value outside and its position."""
        array = np.asarray(array)
        bad = ~((array >= lo) & (array <= hi))
        if bad.any():
            at = np.unravel_index(int(np.argmax(bad)), array.shape)
            where = f" at {tuple(int(i) for i in at)}" if array.ndim else ""
            self.fail(f"{name} holds {array[at].item()!r}{where}, outside {lo}..{hi}")
        return array

    def all_finite(self, array, name: str) -> np.ndarray:
        array = np.asarray(array)
        if array.size and not np.isfinite(array).all():
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            self.fail(f"{name} holds {bad} non-finite value(s) (NaN or infinity)")
        return array

    def load_json(self, text: str):
        """Strict JSON: ``NaN``, ``Infinity`` and numbers too large for a float are refused."""

        def constant(name):
            self.fail(f"holds {name}, which is not a JSON number")

        try:
            return json.loads(text, parse_constant=constant, parse_float=self._float, parse_int=self._int)
        except (json.JSONDecodeError, RecursionError):
            raise self.error(f"{self.path} is not valid JSON"
                             + (f"; {self.fix}" if self.fix else "")) from None

    def _int(self, text: str) -> int:
        if len(text.lstrip("-")) > 300:  # past a float's range (and Python's 4300-digit limit)
            self.fail(f"holds an integer of {len(text)} digits, too large for a number")
        return int(text)

    def _float(self, text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            self.fail(f"holds the number {text[:40]}, too large for a float")
        return value
