"""Pieces several commands share: path checks, thread counts, saving a command's config.

Output checks: every command calls ``check_output_file`` / ``check_output_folder`` on what it will
write before it starts any work, and runs its work inside ``mirrorhall.files.undo_on_failure``, so
a refused or failed command leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from mirrorhall.errors import ConfigError, OutputError


def check_path(flag: str, value: str | None) -> None:
    """Refuse a path no file system accepts, before anything is written."""
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{flag} must name a file or folder, got {value!r}")
    if "\x00" in value:
        raise ConfigError(f"{flag} holds a NUL character, which no path may hold: {value!r}")


# What a folder of each kind holds, to name a folder of another kind that an --out points at.
FOLDER_KINDS = (
    ("manifest.json", "a mirrorhall dataset"),
    ("checkpoint.json", "a checkpoint"),
    ("latest.json", "a training run"),
    ("checkpoints", "a training run"),
    ("probe_config.json", "probe results"),
    ("compare_direct.json", "compare-direct results"),
    ("demo_config.json", "a demo's outputs"),
)


def _writable_folder(flag: str, value: str, folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise OutputError(f"{flag} {value}: {folder} is not a folder; {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {value}: the folder {folder} is not writable; choose another path")


NAME_MAX = 255
"""The longest file name (in bytes) common file systems take."""


def _check_names(flag: str, value: str) -> None:
    for part in Path(value).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise OutputError(f"{flag} holds a name of {len(os.fsencode(part))} bytes; file systems take at most "
                              f"{NAME_MAX}: {value[:60]!r}...")


def _creatable(flag: str, value: str, folder: Path, parents: bool = False) -> None:
    """``folder`` exists and is writable, or can be created: under an existing writable parent
    (with ``parents``, under its nearest existing ancestor)."""
    if os.path.lexists(folder):
        _writable_folder(flag, value, folder, "choose another path")
        return
    parent = folder.parent
    if parents:
        while not os.path.lexists(parent) and parent != parent.parent:
            parent = parent.parent
    if not os.path.lexists(parent):
        raise OutputError(f"{flag} {value}: the folder {parent} does not exist; create it first "
                          "(mirrorhall creates at most the last folder of an output path)")
    _writable_folder(flag, value, parent, "choose another path")


def check_output_file(flag: str, value: str | None) -> Path | None:
    """Refuse, before any work, a file output that cannot be written: a folder or a special file
    in its place, a folder that is not writable, or one that would need more than its last level
    created (``--render /nonexistent/dir/x.gif``)."""
    check_path(flag, value)
    if value is None:
        return None
    _check_names(flag, value)
    path = Path(value)
    if path.is_dir():
        raise OutputError(f"{flag} {value} is a folder; name a file in it")
    if os.path.lexists(path) and not path.is_symlink() and not path.is_file():
        raise OutputError(f"{flag} {value} exists and is not a regular file; choose another path")
    _creatable(flag, value, path.absolute().parent)
    return path


def check_output_folder(flag: str, value: str, holds: tuple[str, ...] = (), *, empty: bool = False,
                        parents: bool = False) -> Path:
    """Refuse, before any work, an output folder that cannot be used: a file in its place, a
    folder that is not writable or cannot be created (its parent must exist; with ``parents``,
    any missing folders are created), or a folder of another kind.

    An existing folder is accepted if it holds nothing but hidden files, or (unless ``empty``)
    one of the entries ``holds`` that this command writes (a re-run or a resume).
    """
    check_path(flag, value)
    _check_names(flag, value)
    folder = Path(value)
    if os.path.lexists(folder) and not folder.is_dir():
        raise OutputError(f"{flag} {value} is a file, not a folder; choose another {flag}")
    _creatable(flag, value, folder.absolute(), parents)
    if not folder.is_dir():
        return folder
    names = [n for n in os.listdir(folder) if not n.startswith(".")]
    if not names or (not empty and any(n in names for n in holds)):
        return folder
    found = next((what for name, what in FOLDER_KINDS if name in names), "files of its own")
    if empty:
        raise OutputError(f"{flag} {value} is not empty (it holds {found}); choose an empty or new folder")
    raise OutputError(f"{flag} {value} is not empty and holds {found}, not this command's outputs; "
                      "choose an empty or new folder")


def check_run_options(device, processes: int | None) -> None:
    """The ``--device`` and ``--processes`` of a command that trains (recipe, diversity)."""
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if processes is not None and processes < 1:
        raise ConfigError(f"--processes must be >= 1, got {processes}")


def set_threads(threads: int) -> None:
    """torch's intra-op thread count for this process (0: leave torch's default).

    Set here, by the command, and never by library constructors: the entry point owns the process.
    """
    if threads:
        import torch

        torch.set_num_threads(threads)


def save_config(cfg, folder: str | Path, name: str) -> Path:
    """``folder/name`` holding the command's config as JSON (the folder is created)."""
    from mirrorhall.commands.options import to_json

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text(json.dumps({"command": type(cfg).__name__, **to_json(cfg)}, indent=1) + "\n")
    except OSError as err:
        raise OutputError(f"cannot write {Path(folder) / name}: {err.strerror or err}") from None
    return path


def undo_file_on_failure(path: str | Path | None):
    """Around the writing of a file output: if its folder is created for it and the write fails,
    that folder goes again (the file itself is written atomically)."""
    import contextlib

    from mirrorhall.files import first_missing, undo_on_failure

    if path is None:
        return contextlib.nullcontext()
    parent = Path(path).absolute().parent
    return undo_on_failure(parent) if first_missing(parent) is not None else contextlib.nullcontext()
