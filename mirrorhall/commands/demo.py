"""``mirrorhall demo``: the reference model in a crowd, every probe at demo scale, a report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mirrorhall.commands.act import ActConfig, act
from mirrorhall.commands.common import check_output_folder, check_path, save_config
from mirrorhall.commands.options import option
from mirrorhall.commands.probe import ProbeConfig, probe
from mirrorhall.commands.run import scene_personas
from mirrorhall.errors import CheckpointError

DEFAULT_OUT = "out/demo"
DEMO_OUTPUTS = ("demo_config.json", "scene.gif", "probes", "data", "run")
"""What the demo writes in its folder (a folder holding one of them may be written again)."""


@dataclass(frozen=True)
class DemoConfig:
    """``mirrorhall demo``: where to write, from which checkpoint."""

    out: str = option(DEFAULT_OUT, metavar="DIR")
    """Output folder (scene.gif, probes/, demo_config.json); only the default's missing parent is created."""
    seed: int = 0
    """Seed of the scene and the probes."""
    checkpoint: str | None = option(None, metavar="RUN")
    """Checkpoint or run folder (None: the reference checkpoint shipped with mirrorhall)."""
    from_scratch: bool = False
    """Run the whole pipeline at small scale instead: generate, train, probe."""
    progress: bool = True
    """Show progress bars on stderr."""

    def __post_init__(self):
        check_path("--out", self.out)
        check_path("--checkpoint", self.checkpoint)


def demo(cfg: DemoConfig) -> int:
    from mirrorhall.files import undo_on_failure

    # the default out/demo may create out/; a path the user names needs an existing parent
    out = check_output_folder("--out", cfg.out, DEMO_OUTPUTS, parents=cfg.out == DEFAULT_OUT)
    with undo_on_failure(out, keep=_resumable):
        return _demo(cfg, out)


def _resumable(entry: Path) -> bool:
    """The dataset and run of --from-scratch survive a later failure once they hold progress."""
    return (entry.name == "data" and any(entry.glob("shard-*.parquet"))) or (
        entry.name == "run" and any(entry.glob("checkpoints/step-*/checkpoint.json")))


def _demo(cfg: DemoConfig, out: Path) -> int:
    from mirrorhall.checkpoints import reference_checkpoint

    t0 = time.perf_counter()
    if cfg.from_scratch:
        checkpoint = _from_scratch(out, cfg)
    else:
        checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else reference_checkpoint()
        if not (checkpoint / "checkpoint.json").exists() and not (checkpoint / "latest.json").exists():
            raise CheckpointError(f"no checkpoint at {checkpoint}; pass --checkpoint RUN or use --from-scratch")
        from mirrorhall.imitation.checkpoint import load_model

        load_model(checkpoint)  # a checkpoint that cannot be used is refused before anything is written
    save_config(cfg, out, "demo_config.json")
    print(f"== 1. a crowd scene with the model ({checkpoint})")
    _scene(checkpoint, out, cfg.seed, cfg.progress)
    print("== 2. every probe at demo scale")
    probe(ProbeConfig(name="all", checkpoint=str(checkpoint), out=str(out / "probes"), seed=cfg.seed,
                      progress=cfg.progress))
    from mirrorhall.analysis.report import write_report

    report = write_report(out / "probes")
    print(f"done in {time.perf_counter() - t0:.0f} s:\n  animation: {out / 'scene.gif'}\n  report:    {report}")
    return 0


def _scene(checkpoint: Path, out: Path, seed: int, progress: bool) -> None:
    """Agent 0 is the model: itself for 20 steps, then agent 2, then agent 1 (its imitator) imitating it."""
    from mirrorhall.agents.personas import Imitator, Trait
    from mirrorhall.imitation.checkpoint import load_model

    model, _, meta = load_model(checkpoint)
    population = meta.get("dataset", {}).get("population", "lab")
    personas = list(scene_personas(population, 12, model.config.n_colors, seed))
    personas[1] = Imitator(0, 0.9, Trait("green", "avoid", "casual"))
    personas[2] = Trait("red", "approach", "focused")
    act(ActConfig(checkpoint=str(checkpoint), population=population, agents=12, steps=60, seed=seed,
                  prompt=("agent_0=behave as yourself",),
                  switch=("20:agent_0=behave as agent 2", "40:agent_0=pretend to be agent 1 pretending to be you"),
                  render=str(out / "scene.gif"), progress=progress),
        personas=personas)


def _from_scratch(out: Path, cfg: DemoConfig) -> Path:
    from mirrorhall.imitation.generate import GenerateConfig, generate
    from mirrorhall.imitation.train import TrainConfig, train

    print("== 0. the pipeline at small scale: generate, train")
    data, run = out / "data", out / "run"
    from mirrorhall.commands.console import bar

    gen = GenerateConfig(population="lab", episodes=256, seed=cfg.seed)
    with bar(gen.n_shards, "generate", "shard", enabled=cfg.progress) as shards:
        manifest = generate(gen, data, progress=lambda n, _: shards.update(n))
    print(f"  {data}: {manifest['samples']} labelled samples")
    resume = (run / "latest.json").exists()
    last = train(TrainConfig(data=str(data), out=str(run), steps=600, size="small", eval_every=300,
                             checkpoint_every=300, seed=cfg.seed), resume=resume, progress=cfg.progress)
    print(f"  {run}: step {last.get('step')}, held-out KL {last.get('eval_kl', float('nan')):.3f}")
    return run
