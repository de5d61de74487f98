"""What a command shows on stderr: progress bars that close before an error prints, and the log
lines of third-party libraries kept off the terminal.

The contract (``mirrorhall.cli``): a failed command ends with one line ``mirrorhall: error: ...``.
A progress bar left open would glue that line to the bar and redraw itself after it;
``close_bars`` closes every open bar first. Libraries such as RLlib log warnings that say nothing
to a user of mirrorhall (``You are running PPO on the new API stack!``); ``library_log`` keeps
them in a log file beside the command's outputs instead.
"""

from __future__ import annotations

import logging
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

LIBRARY_LOGGERS = ("ray", "ray.rllib", "ray.tune", "ray.train", "ray.data")
"""Loggers whose records go to the log file (each keeps its own level)."""


def bar(total: int | None, desc: str, unit: str, enabled: bool = True, **kwargs):
    """A tqdm progress bar on stderr (``close_bars`` closes it if the command fails)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, **kwargs)


def close_bars() -> None:
    """Close every open progress bar, so that what is printed next starts on a line of its own
    and no bar is redrawn after it."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is None:
        return
    for b in list(getattr(tqdm.tqdm, "_instances", ())):
        try:
            b.close()
        except Exception:  # noqa: BLE001 - a broken bar must not hide the error being reported
            pass


class _Keep(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never fail the command
            self.handleError(record)


@contextmanager
def library_log(path: str | Path):
    """Inside: log records of ``LIBRARY_LOGGERS`` and warnings raised by third-party code are
    kept off stderr. On success they are written to ``path`` (nothing is written when there were
    none, or when the command fails: a failed command leaves nothing behind)."""
    keep = _Keep()
    saved = {}
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.propagate)
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.addHandler(keep)
        logger.propagate = False

    def show(message, category, filename, lineno, file=None, line=None):
        keep.lines.append(warnings.formatwarning(message, category, filename, lineno, line).rstrip())

    try:
        with warnings.catch_warnings():
            previous = warnings.showwarning
            warnings.showwarning = lambda m, c, f, n, file=None, line=None: (
                previous(m, c, f, n, file, line) if _ours(c) else show(m, c, f, n, file, line))
            yield
    finally:
        for name, (handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.removeHandler(keep)
            for h in handlers:
                logger.addHandler(h)
            logger.propagate = propagate
    if keep.lines:
        Path(path).write_text("\n".join(keep.lines) + "\n")


def _ours(category) -> bool:
    from mirrorhall.errors import InputWarning

    return issubclass(category, InputWarning)
