"""``mirrorhall diversity``: the diversity experiment for one held-out persona family.

The experiment itself is in ``mirrorhall.diversity``.
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


def family_names() -> tuple[str, ...]:
    from mirrorhall.agents.personas import FAMILIES

    return tuple(FAMILIES)


def scale_names() -> tuple[str, ...]:
    from mirrorhall.diversity import SCALES

    return tuple(SCALES)


@dataclass(frozen=True)
class DiversityConfig:
    """``mirrorhall diversity``: which family is held out, where, at what scale and seed."""

    held_out: str = option(positional=True, choices=family_names)
    """The persona family no point trains on; the others are added one by one."""
    out: str = option(metavar="DIR")
    """The experiment's folder: a new or empty one, or one this command wrote (its finished points are kept)."""
    scale: str = option("cpu", choices=scale_names)
    """Sample budget and model of every point: tiny (seconds, a first look), cpu (about 6-10 minutes a
    point on 2 cores), cpu-recent (cpu with recency-weighted evidence), cpu-place (cpu-recent with
    the place columns) or cpu-pickup (cpu-place with the pickup columns)."""
    seed: int = 1
    """Seed of each point's dataset and initial weights; run again with another seed to add points."""
    max_families: int | None = None
    """Run the points with 0 .. this many training families only (None: every point)."""
    only: int | None = None
    """Run only the point with this many training families (an ablation of one point)."""
    probe_seed: int = 1
    """Seed of the probes' scenes (the same for every point)."""
    device: str = option("cpu", metavar="{cpu,cuda,cuda:N}")
    """torch device of the training."""
    threads: int = 0
    """torch threads (0: leave torch's default)."""
    processes: int | None = None
    """Processes that generate and load the data (None: one per CPU core)."""
    progress: bool = True
    """Show each point's training progress bar on stderr."""

    def __post_init__(self):
        if self.held_out not in family_names():
            raise ConfigError(f"unknown family {self.held_out!r} to hold out; allowed: {', '.join(family_names())}")
        if self.scale not in scale_names():
            raise ConfigError(f"--scale must be one of {', '.join(scale_names())}, got {self.scale!r}")
        check_run_options(self.device, self.processes)
        for name, v in (("--max-families", self.max_families), ("--only", self.only)):
            if v is not None and not 0 <= v < len(family_names()):
                raise ConfigError(f"{name} must be 0 .. {len(family_names()) - 1}, got {v}")
        if self.max_families is not None and self.only is not None:
            raise ConfigError("give --max-families or --only, not both")
        check_path("--out", self.out)


def diversity(cfg: DiversityConfig) -> int:
    from mirrorhall.imitation.train import check_device

    names = ("diversity.json", "diversity.png",
             *(f"n{n}-seed{cfg.seed}" for n in range(len(family_names()))))
    out = check_output_folder("--out", cfg.out, holds=names)
    check_device(cfg.device)
    set_threads(cfg.threads)
    from mirrorhall.diversity import KS, run_experiment

    result = run_experiment(cfg.held_out, out, scale=cfg.scale, seeds=(cfg.seed,),
                            points=(cfg.only,) if cfg.only is not None
                            else None if cfg.max_families is None else range(cfg.max_families + 1),
                            probe_seed=cfg.probe_seed,
                            device=cfg.device, threads=cfg.threads, processes=cfg.processes,
                            progress=cfg.progress)
    print(f"held-out {cfg.held_out}: fraction of attainable information by number of training families")
    print("families  " + "".join(f"{f'K={k}':8}" for k in KS) + "traits K=10  families K=10")
    for row in result["curve"]:
        fam = row["families_mean_K10"]
        print(f"{row['n_families']:>8}  " + "  ".join(f"{row[f'held_out_K{k}']['mean']:6.3f}" for k in KS)
              + f"  {row['traits_K10']:11.3f}  " + ("-" if fam is None else f"{fam:13.3f}"))
    print(f"-> {out}/diversity.json, {out}/diversity.png")
    return 0
