"""Pieces several commands share: path checks, thread counts, saving a command's config."""

from __future__ import annotations

import json
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
