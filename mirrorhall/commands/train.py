"""``mirrorhall train``: the shared multi-policy model, trained on a generated dataset.

The run's own config is ``TrainConfig`` (saved in every checkpoint); this command adds how to
run it: resume, locally or on Ray Train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mirrorhall.commands.common import check_output_folder, check_path, set_threads
from mirrorhall.commands.options import Opt, option
from mirrorhall.errors import ConfigError
from mirrorhall.imitation.train import MODEL_SIZES, PRECISIONS, SCHEDULES, TrainConfig

# Settings of TrainConfig's fields on the command line (help where the field has no docstring).
OPTIONS = {
    "data": Opt(metavar="DIR"),
    "out": Opt(metavar="RUN"),
    "size": Opt(help="Model size preset.", choices=lambda: tuple(MODEL_SIZES)),
    "episodes_per_batch": Opt(help="Episodes per batch (samples are drawn from each)."),
    "samples_per_episode": Opt(help="Labelled samples drawn from each episode of a batch."),
    "lr": Opt(help="Peak learning rate (AdamW)."),
    "weight_decay": Opt(help="AdamW weight decay."),
    "grad_clip": Opt(help="Gradient norm clip."),
    "eval_every": Opt(help="Evaluate on the held-out episodes every this many steps."),
    "checkpoint_every": Opt(help="Write a checkpoint every this many steps."),
    "log_every": Opt(help="Log metrics every this many steps."),
    "seed": Opt(help="Seed of the model's initial weights and the batches."),
    "eval_samples": Opt(help="Held-out samples per evaluation."),
    "device": Opt(metavar="{cpu,cuda,cuda:N}"),
    "precision": Opt(choices=PRECISIONS),
    "schedule": Opt(choices=SCHEDULES),
    "totals": Opt(hidden=True),  # what --minutes planned: saved in the run's config, not given by hand
}


@dataclass(frozen=True)
class TrainCommand:
    """``mirrorhall train``: the run's config and how to run it."""

    config: TrainConfig
    """What to train (its fields are this command's options)."""
    resume: bool = False
    """Continue the run in --out from its latest checkpoint."""
    ray: bool = False
    """Train with Ray Train (DDP over gloo on cpu)."""
    workers: int = 2
    """Ray Train workers (with --ray)."""
    ray_address: str | None = option(None, metavar="ADDR")
    """Ray cluster address (with --ray)."""
    minutes: float | None = option(None, metavar="M")
    """Train for as many of --steps as fit this many minutes of wall-clock (planned from the rate of
    the warm-up's steps and revised as the run goes; the planned totals are saved in the run's
    config). Local loop only, not with --resume."""
    progress: bool = True
    """Show a progress bar on stderr."""

    def __post_init__(self):
        check_path("--data", self.config.data)
        check_path("--out", self.config.out)
        if self.ray and self.config.device != "cpu":
            raise ConfigError("--device applies to the local loop; Ray Train workers train on cpu")
        if self.minutes is not None:
            if isinstance(self.minutes, bool) or not 0 < self.minutes <= 10**4:
                raise ConfigError(f"--minutes must be a number of minutes in (0, 10000], got {self.minutes!r}")
            if self.ray or self.resume:
                raise ConfigError("--minutes plans a new local run; leave it out with --ray or --resume")


RUN_ENTRIES = ("latest.json", "checkpoints", "metrics.jsonl", "tb", "ray")
"""What a training run folder holds (a folder holding one of them is a run, to resume or refuse)."""


def has_checkpoint(run: Path) -> bool:
    """A run a failure must not delete: it holds a checkpoint to resume from."""
    return any(run.glob("checkpoints/step-*/checkpoint.json")) or any(run.glob("ray/*/checkpoint_*/checkpoint.json"))


def train(cmd: TrainCommand) -> int:
    from mirrorhall.files import undo_on_failure

    out = check_output_folder("--out", cmd.config.out, RUN_ENTRIES)
    with undo_on_failure(out, keep=lambda _: has_checkpoint(out)):
        return _train(cmd)


def _train(cmd: TrainCommand) -> int:
    cfg = cmd.config
    set_threads(cfg.threads)
    if cmd.ray:
        from mirrorhall.imitation.train_ray import train_ray

        metrics = train_ray(cfg, workers=cmd.workers, address=cmd.ray_address, resume=cmd.resume)
    else:
        import time

        from mirrorhall.imitation.train import Budget
        from mirrorhall.imitation.train import train as train_local

        budget = Budget(time.perf_counter() + 60 * cmd.minutes) if cmd.minutes else None
        metrics = train_local(cfg, resume=cmd.resume, progress=cmd.progress, budget=budget)
    shown = {k: round(v, 4) for k, v in metrics.items()
             if k.startswith(("loss", "eval_kl", "eval_ce")) and isinstance(v, float)}
    planned = f" (planned for {cmd.minutes:g} minutes)" if cmd.minutes else ""
    print(f"{cfg.out}: step {metrics.get('step')}{planned}, " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return 0
