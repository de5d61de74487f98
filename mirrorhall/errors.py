"""User-facing errors: one small hierarchy, each printed by the CLI in one line with exit code 2.

Anything that is not a ``UserError`` is a bug: the CLI shows its traceback and asks for a report
(exit 1). Every class also derives from ``ValueError`` (``OutputError`` from ``OSError`` too), so
library callers that catch the built-in types keep working.

This module imports nothing from the project, so every layer (envs, agents, imitation, analysis)
may raise these.
"""

from __future__ import annotations

from contextlib import contextmanager


class UserError(ValueError):
    """Something the user gave cannot be used; the message names it and says what to do."""


class ConfigError(UserError):
    """An invalid option, config field, name, id or prompt."""


class DatasetError(UserError):
    """A dataset on disk cannot be used as it is; the message says which file and what to do."""


class CheckpointError(UserError):
    """A checkpoint cannot be used; the message names the file and what is wrong."""


class OutputError(UserError, OSError):
    """An output path cannot be written (missing parent, not writable, a folder of another kind)."""


class InputWarning(UserWarning):
    """Something the user gave is used, but perhaps not as meant (a prompt word the model does not
    know, a dataset too small to hold episodes out); the CLI prints it in one line
    ``mirrorhall: warning: ...`` and goes on."""


@contextmanager
def user_input(what: str = ""):
    """Turn a plain ``ValueError`` raised by the validation called directly inside into a
    ``ConfigError`` (prefixed by ``what`` when given).

    For the command boundary only, around constructors and validators of what the user typed
    (``with user_input(): WorldConfig(...)``); never around a whole command, where a
    ``ValueError`` from deep inside (numpy, a bug) must keep its traceback.
    """
    try:
        yield
    except UserError:
        raise
    except ValueError as err:
        text = str(err) or type(err).__name__
        raise ConfigError(f"{what}: {text}" if what else text) from err
