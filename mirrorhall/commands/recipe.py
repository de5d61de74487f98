"""``mirrorhall recipe``: a whole recipe (generate, train, export, probe) from nothing, timed.

The recipes themselves are in ``mirrorhall.recipes``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirrorhall.commands.common import (
    check_output_folder,
    check_path,
    check_run_options,
    set_threads,
)
from mirrorhall.commands.options import option
from mirrorhall.errors import ConfigError


def recipe_names() -> tuple[str, ...]:
    from mirrorhall.recipes import RECIPES

    return tuple(RECIPES)


@dataclass(frozen=True)
class RecipeConfig:
    """``mirrorhall recipe``: which recipe, where, on what."""

    name: str = option(positional=True, choices=recipe_names)
    """The recipe to run."""
    out: str = option(metavar="DIR")
    """An empty or new folder for the dataset, the run, the checkpoint and the probe."""
    device: str = option("cpu", metavar="{cpu,cuda,cuda:N}")
    """torch device of the training stage."""
    threads: int = 0
    """torch threads (0: leave torch's default)."""
    processes: int | None = None
    """Processes that generate and load the data (None: one per CPU core)."""
    minutes: float | None = option(None, metavar="M")
    """Wall-clock budget from nothing to the probe's result: training runs as many steps as fit,
    at most the recipe's (None: the recipe's own budget; 0: none, exactly the recipe's steps)."""
    progress: bool = True
    """Show the training progress bar on stderr."""

    def __post_init__(self):
        if self.name not in recipe_names():
            raise ConfigError(f"unknown recipe {self.name!r}; known: {', '.join(recipe_names())}")
        check_run_options(self.device, self.processes)
        check_path("--out", self.out)
        if self.minutes is not None:
            from mirrorhall.recipes import check_minutes

            check_minutes(self.minutes)


def recipe(cfg: RecipeConfig) -> int:
    from mirrorhall.files import undo_on_failure
    from mirrorhall.imitation.train import check_device

    out = check_output_folder("--out", cfg.out, empty=True)
    check_device(cfg.device)
    set_threads(cfg.threads)
    from mirrorhall.recipes import run_recipe

    # a failure keeps a training run that has a checkpoint (``mirrorhall train --resume`` continues it)
    with undo_on_failure(out, keep=lambda entry: entry.name == "run" and any(entry.glob("checkpoints/step-*"))):
        result = run_recipe(cfg.name, out, device=cfg.device, threads=cfg.threads, processes=cfg.processes,
                            progress=cfg.progress, minutes=cfg.minutes)
    fraction = result["fraction_at_K10"]
    shown = "n/a" if fraction is None else f"{fraction:.3f}"
    print(f"total: {result['seconds']['total']:.1f} s; imitate fraction of attainable information at K = 10: "
          f"{shown} (scale {result['probe_scale']}, seed {result['probe_seed']}) -> {out}/recipe.json")
    return 0
