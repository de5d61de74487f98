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
    progress: bool = True
    """Show a progress bar on stderr."""

    def __post_init__(self):
        check_path("--data", self.config.data)
        check_path("--out", self.config.out)
        if self.ray and self.config.device != "cpu":
            raise ConfigError("--device applies to the local loop; Ray Train workers train on cpu")


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
        from mirrorhall.imitation.train import train as train_local

        metrics = train_local(cfg, resume=cmd.resume, progress=cmd.progress)
    shown = {k: round(v, 4) for k, v in metrics.items()
             if k.startswith(("loss", "eval_kl", "eval_ce")) and isinstance(v, float)}
    print(f"{cfg.out}: step {metrics.get('step')}, " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return 0
