"""Checkpoints shipped with mirrorhall.

``reference/`` is package data of the wheel (``mirrorhall.checkpoints``, see pyproject.toml), so
``mirrorhall demo`` finds it in an installed package as in this checkout. Other folders here are
not shipped.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from mirrorhall.errors import CheckpointError


def reference_checkpoint() -> Path:
    """The folder of the shipped reference checkpoint (absolute)."""
    folder = files(__name__).joinpath("reference")
    if not isinstance(folder, Path):  # e.g. imported from a zip: no folder to load from
        raise CheckpointError(f"the reference checkpoint is not a folder on disk ({folder}); "
                              "install mirrorhall from a wheel or a checkout, or pass --checkpoint RUN")
    return folder.resolve()
