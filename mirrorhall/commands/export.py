"""``mirrorhall export``: a checkpoint without optimizer state, for sharing.

The output is a checkpoint folder and nothing else (its metadata names where it came from).
"""

from __future__ import annotations

from dataclasses import dataclass

from mirrorhall.commands.common import check_output_folder, check_path
from mirrorhall.commands.options import option


@dataclass(frozen=True)
class ExportConfig:
    """``mirrorhall export``: which checkpoint to copy, and where."""

    checkpoint: str = option(metavar="RUN")
    """Checkpoint or training run folder."""
    out: str = option(metavar="DIR")
    """An empty or new folder."""
    half: bool = False
    """Store the weights as float16: half the size, figures equal to about 3 decimals."""

    def __post_init__(self):
        check_path("--checkpoint", self.checkpoint)
        check_path("--out", self.out)


def export(cfg: ExportConfig) -> int:
    check_output_folder("--out", cfg.out, empty=True)
    from mirrorhall.imitation.checkpoint import export_checkpoint

    print(f"exported: {export_checkpoint(cfg.checkpoint, cfg.out, half=cfg.half)}")
    return 0
