"""The ``mirrorhall`` command line. Each subcommand parses one typed config and calls the library.

User errors (bad configs, names, ids, paths) print one line ``mirrorhall: error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirrorhall import __version__


class UsageError(ValueError):
    """A user error the CLI reports in one line."""


_LINE_BREAKS = {c: repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """``text`` with every character that would start a new line shown escaped."""
    return text.translate(str.maketrans(_LINE_BREAKS))


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse quotes some arguments raw ("unrecognized arguments: ..."): keep its error one line
        super().error(one_line(message))


@dataclass(frozen=True)
class RunConfig:
    """``mirrorhall run``: one rendered scene of scripted personas."""

    population: str = "crowd"
    """Registered population the personas are drawn from."""
    agents: int = 8
    """Number of agents in the scene."""
    steps: int = 100
    """Steps to run."""
    seed: int = 0
    """Seed of the personas, the world and the actions."""
    view_radius: int | None = None
    """Partial observability radius (None: full view)."""
    width: int = 11
    height: int = 11
    colors: int = 4
    render: str | None = None
    """Path of a .gif animation to write."""
    progress: bool = True


def _positive(name):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {value}")
        return value

    return parse


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a scene of scripted personas and summarise it",
                       description="Run a scene of scripted personas, print a per-agent table, "
                                   "optionally write an animation.")
    p.add_argument("--population", default=RunConfig.population, help="population name (default: crowd)")
    p.add_argument("--agents", type=_positive("--agents"), default=RunConfig.agents)
    p.add_argument("--steps", type=_positive("--steps"), default=RunConfig.steps)
    p.add_argument("--seed", type=_positive("--seed"), default=RunConfig.seed)
    p.add_argument("--view-radius", type=_positive("--view-radius"), default=None)
    p.add_argument("--width", type=_positive("--width"), default=RunConfig.width)
    p.add_argument("--height", type=_positive("--height"), default=RunConfig.height)
    p.add_argument("--colors", type=_positive("--colors"), default=RunConfig.colors)
    p.add_argument("--render", metavar="OUT.gif", default=None, help="write an animated GIF here")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=lambda a: cmd_run(RunConfig(**_fields(a, RunConfig))))


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main demo: the reference model in a crowd, all probes, a report",
                       description="A crowd scene where the reference model acts as itself, then as "
                                   "another agent, then as the agent imitating it; every probe at demo "
                                   "scale; a markdown report and an animation.")
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--seed", type=_positive("--seed"), default=0)
    p.add_argument("--checkpoint", default=None, help="default: the reference checkpoint shipped in checkpoints/")
    p.add_argument("--from-scratch", action="store_true",
                   help="run the whole pipeline at small scale instead: generate, train, probe")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_demo)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="copy a checkpoint without optimizer state (for sharing)")
    p.add_argument("--checkpoint", required=True, help="checkpoint or training run folder")
    p.add_argument("--out", required=True, help="an empty or new folder")
    p.set_defaults(func=cmd_export)


def _add_generate(sub) -> None:
    from mirrorhall.imitation.dataset import GenerateConfig as G

    p = sub.add_parser("generate", help="generate a hindsight-labelled dataset (Parquet shards)",
                       description="Run scenes from a population and label every sampled "
                                   "(agent, time, prompt) with the exact distribution asked for.")
    p.add_argument("--population", default=G.population)
    p.add_argument("--episodes", type=_positive("--episodes"), default=G.episodes)
    p.add_argument("--out", required=True, help="dataset folder (created; a re-run resumes it)")
    p.add_argument("--seed", type=_positive("--seed"), default=G.seed)
    p.add_argument("--agents", type=_positive("--agents"), default=G.agents)
    p.add_argument("--steps", type=_positive("--steps"), default=G.steps, help="steps per episode")
    p.add_argument("--view-radius", type=_positive("--view-radius"), default=None)
    p.add_argument("--episodes-per-shard", type=_positive("--episodes-per-shard"), default=G.episodes_per_shard)
    p.add_argument("--prompts-per-step", type=_positive("--prompts-per-step"), default=G.prompts_per_step)
    p.add_argument("--workers", type=_positive("--workers"), default=0,
                   help="fan shards out as Ray tasks on a local loopback Ray instance with W CPUs")
    p.add_argument("--ray-address", default=None, help="run the Ray tasks on this cluster instead")
    p.add_argument("--processes", type=_positive("--processes"), default=1,
                   help="local processes without Ray (same bytes for any count)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_generate)


def _add_train(sub) -> None:
    from mirrorhall.imitation.train import MODEL_SIZES
    from mirrorhall.imitation.train import TrainConfig as T

    p = sub.add_parser("train", help="train the shared multi-policy model on a dataset",
                       description="Maximum likelihood on the soft labels of a generated dataset; "
                                   "one local process by default, Ray Train with --ray.")
    p.add_argument("--data", required=True, help="dataset folder from mirrorhall generate")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics, TensorBoard)")
    p.add_argument("--steps", type=_positive("--steps"), default=T.steps)
    p.add_argument("--size", choices=tuple(MODEL_SIZES), default=T.size)
    p.add_argument("--lr", type=float, default=T.lr)
    p.add_argument("--seed", type=_positive("--seed"), default=T.seed)
    p.add_argument("--eval-every", type=_positive("--eval-every"), default=T.eval_every)
    p.add_argument("--checkpoint-every", type=_positive("--checkpoint-every"), default=T.checkpoint_every)
    p.add_argument("--episodes-per-batch", type=_positive("--episodes-per-batch"), default=T.episodes_per_batch)
    p.add_argument("--samples-per-episode", type=_positive("--samples-per-episode"), default=T.samples_per_episode)
    p.add_argument("--threads", type=_positive("--threads"), default=0, help="torch threads (0: default)")
    p.add_argument("--device", default=T.device, help="torch device of the local loop: cpu, cuda or cuda:N")
    p.add_argument("--data-processes", type=_positive("--data-processes"), default=1,
                   help="local processes that prepare the shards at start-up")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--ray", action="store_true", help="train with Ray Train (DDP over gloo on CPU)")
    p.add_argument("--workers", type=_positive("--workers"), default=2, help="Ray Train workers (with --ray)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (with --ray)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_train)


def _add_act(sub) -> None:
    p = sub.add_parser("act", help="a scene where chosen agents are driven by a trained model",
                       description="Run a scene of scripted personas in which the agents named by "
                                   "--prompt are driven by the model, and summarise it.")
    p.add_argument("--checkpoint", required=True, help="checkpoint or training run folder")
    p.add_argument("--population", default="crowd")
    p.add_argument("--agents", type=_positive("--agents"), default=8)
    p.add_argument("--steps", type=_positive("--steps"), default=60)
    p.add_argument("--seed", type=_positive("--seed"), default=0)
    p.add_argument("--view-radius", type=_positive("--view-radius"), default=None)
    p.add_argument("--prompt", action="append", default=[], metavar="agent_I=TEXT",
                   help="drive agent I by the model with this prompt (repeatable)")
    p.add_argument("--switch", action="append", default=[], metavar="STEP:agent_I=TEXT",
                   help="change agent I's prompt before step STEP (repeatable)")
    p.add_argument("--render", metavar="OUT.gif", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_act)


def _add_probe(sub) -> None:
    p = sub.add_parser("probe", help="run a probe (or all) on a checkpoint: JSON + plot per probe",
                       description="Measure the model against the Bayes-optimal observer and naive "
                                   "baselines on held-out seeds.")
    p.add_argument("name", help="calibration, describe, imitate, second_order, mirror_test, outcome or all")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="folder for NAME.json and NAME.png")
    p.add_argument("--seed", type=_positive("--seed"), default=0)
    p.add_argument("--episodes", type=_positive("--episodes"), default=None, help="scenes per probe (default: by --scale)")
    p.add_argument("--scale", choices=("small", "full"), default="small")
    p.add_argument("--population", default=None, help="default: the checkpoint's training population")
    p.add_argument("--threads", type=_positive("--threads"), default=0)
    p.set_defaults(func=cmd_probe)
    r = sub.add_parser("report", help="write DIR/report.md from the probe results in DIR")
    r.add_argument("dir")
    r.set_defaults(func=cmd_report)


def _fields(args: argparse.Namespace, cls) -> dict:
    return {k: getattr(args, k) for k in cls.__dataclass_fields__ if hasattr(args, k)}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mirrorhall",
        description="A multi-agent theory-of-mind laboratory: run scenes, generate labelled data, "
                    "train the shared multi-policy model, probe it against a Bayes-optimal observer.",
    )
    parser.add_argument("--version", action="version", version=f"mirrorhall {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_run(sub)
    _add_generate(sub)
    _add_train(sub)
    _add_act(sub)
    _add_probe(sub)
    _add_export(sub)
    _add_demo(sub)
    _add_compare_direct(sub)
    return parser


# --- run -----------------------------------------------------------------------------------------


def scene_personas(population: str, n_agents: int, n_colors: int, seed: int, split: str = "train"):
    """The personas of a scene drawn from a population; their generator is derived from ``seed``."""
    from mirrorhall.agents.populations import get_population

    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    return get_population(population).sample_scene(n_agents, n_colors, rng, split)


def cmd_run(cfg: RunConfig) -> int:
    from tqdm import tqdm

    from mirrorhall.agents.populations import get_population
    from mirrorhall.agents.scene import run_scene
    from mirrorhall.envs.core import WorldConfig

    if cfg.render is not None and not cfg.render.lower().endswith(".gif"):
        raise UsageError(f"--render must name a .gif file, got {cfg.render!r}")
    world = WorldConfig(n_agents=cfg.agents, width=cfg.width, height=cfg.height,
                        n_colors=cfg.colors, view_radius=cfg.view_radius,
                        max_cycles=max(cfg.steps, 1))
    pop = get_population(cfg.population)
    personas = scene_personas(cfg.population, cfg.agents, cfg.colors, cfg.seed)
    frames = []
    bar = tqdm(total=cfg.steps, desc=f"{cfg.population} x{cfg.agents}", unit="step",
               disable=not cfg.progress, file=sys.stderr)

    def on_step(t, state, _):
        if cfg.render is not None:
            from mirrorhall.envs.render import render_rgb

            frames.append(render_rgb(world, state))
        if t:
            bar.update(1)

    episode = run_scene(world, personas, cfg.steps, cfg.seed,
                        hypotheses=pop.hypotheses(cfg.colors, cfg.agents), on_step=on_step)
    bar.close()
    print(summary_table(episode))
    if cfg.render is not None:
        from mirrorhall.envs.render import save_animation

        save_animation(frames, cfg.render)
        print(f"animation: {cfg.render} ({len(frames)} frames)")
    return 0


def summary_table(episode, labels: dict[int, str] | None = None) -> str:
    """A per-agent table: persona, gems by colour, whom it imitates and how faithfully.

    ``labels`` replaces the description of model-driven agents.
    """
    labels = labels or {}
    cfg = episode.config
    letters = [c[0] for c in cfg.color_names]
    personas = episode.personas[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns: agents that imitate nobody
        match = np.nanmean(episode.match[:, 0], axis=0) if episode.steps else np.full(cfg.n_agents, np.nan)
    rows = [("agent", "persona", "gems (" + " ".join(letters) + ")", "imitates", "match", "belief")]
    for i, spec in enumerate(personas):
        gems = " ".join(str(int(x)) for x in episode.collected[0, i])
        target = None if i in labels else getattr(spec, "target", None)
        imit = "-" if target is None else (f"agent {target}" + (" (mirror)" if spec.kind == "mirror" else ""))
        m = match[i] if spec.kind == "imitator" and i not in labels else np.nan
        bel = np.nan if i in labels else episode.belief_on_target[0, i]
        rows.append((f"agent_{i}", labels.get(i, spec.describe()), gems, imit,
                     "-" if np.isnan(m) else f"{m:.2f}", "-" if np.isnan(bel) else f"{bel:.2f}"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(
        f"{episode.steps} steps, {int(episode.collected.sum())} gems collected. match: mean overlap "
        "sum_a min(p, q) of an imitator's action distribution p with its target's q in the "
        "imitator's situation (1 = identical); belief: final posterior mass on the target's true persona."
    )
    return "\n".join(lines)


def cmd_generate(args) -> int:
    from tqdm import tqdm

    from mirrorhall.imitation.dataset import GenerateConfig, generate

    cfg = GenerateConfig(population=args.population, episodes=args.episodes, seed=args.seed,
                         agents=args.agents, steps=args.steps, view_radius=args.view_radius,
                         episodes_per_shard=args.episodes_per_shard,
                         prompts_per_step=args.prompts_per_step)
    bar = tqdm(total=cfg.n_shards, desc="shards", unit="shard", disable=not args.progress,
               file=sys.stderr)

    def progress(shards, samples):
        bar.update(shards)
        bar.set_postfix(samples=progress.total + samples)
        progress.total += samples

    progress.total = 0
    if args.processes > 1 and (args.workers or args.ray_address):
        raise UsageError("--processes runs without Ray; drop --workers/--ray-address, or --processes")
    manifest = generate(cfg, args.out, workers=args.workers, ray_address=args.ray_address,
                        progress=progress, processes=args.processes)
    bar.close()
    print(f"{args.out}: {len(manifest['shards'])} shards, {manifest['episodes']} episodes, "
          f"{manifest['samples']} labelled samples")
    return 0


def cmd_train(args) -> int:
    from mirrorhall.imitation.train import TrainConfig, train

    cfg = TrainConfig(data=args.data, out=args.out, steps=args.steps, size=args.size, lr=args.lr,
                      seed=args.seed, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                      episodes_per_batch=args.episodes_per_batch,
                      samples_per_episode=args.samples_per_episode, threads=args.threads,
                      device=args.device, data_processes=args.data_processes)
    if args.ray:
        if cfg.device != "cpu":
            raise UsageError("--device applies to the local loop; Ray Train workers train on cpu")
        from mirrorhall.imitation.train_ray import train_ray

        metrics = train_ray(cfg, workers=args.workers, address=args.ray_address, resume=args.resume)
    else:
        metrics = train(cfg, resume=args.resume, progress=args.progress)
    shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("loss", "eval_kl", "eval_ce")) and isinstance(v, float)}
    print(f"{args.out}: step {metrics.get('step')}, " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return 0


def parse_assignment(text: str, n_agents: int, flag: str) -> tuple[int, str]:
    """'agent_2=behave as agent 5' -> (2, 'behave as agent 5')."""
    import re

    m = re.fullmatch(r"\s*agent_(\d+)\s*=\s*(.+)", text, flags=re.S)
    if not m:
        raise UsageError(f"{flag} must look like 'agent_2=behave as agent 5', got {text!r}")
    agent = int(m.group(1))
    if agent >= n_agents:
        raise UsageError(f"{flag} names agent_{agent}, which is not in the scene (agent_0..agent_{n_agents - 1})")
    return agent, m.group(2).strip()


def cmd_act(args) -> int:
    from tqdm import tqdm

    from mirrorhall.agents.populations import get_population
    from mirrorhall.agents.scene import run_scene
    from mirrorhall.envs.core import WorldConfig, WorldCore
    from mirrorhall.imitation.checkpoint import load_model, load_policy
    from mirrorhall.imitation.model_io import check_prompt

    if not args.prompt:
        raise UsageError("name at least one model-driven agent with --prompt 'agent_0=behave as yourself'")
    if args.render is not None and not args.render.lower().endswith(".gif"):
        raise UsageError(f"--render must name a .gif file, got {args.render!r}")
    pop = get_population(args.population)
    model, _, _ = load_model(args.checkpoint)
    colors = model.config.n_colors
    world = WorldConfig(n_agents=args.agents, n_colors=colors, view_radius=args.view_radius,
                        max_cycles=max(args.steps, 1))
    prompts = dict(parse_assignment(t, args.agents, "--prompt") for t in args.prompt)
    schedule: dict[int, dict[int, str]] = {}
    for text in args.switch:
        step, _, rest = text.partition(":")
        if not step.strip().isdigit():
            raise UsageError(f"--switch must look like '20:agent_2=behave as agent 5', got {text!r}")
        agent, prompt = parse_assignment(rest, args.agents, "--switch")
        if agent not in prompts:
            raise UsageError(f"--switch names agent_{agent}, which has no --prompt (only model-driven agents switch)")
        schedule.setdefault(int(step), {})[agent] = check_prompt(prompt, args.agents)
    for text in prompts.values():
        check_prompt(text, args.agents)
    driven = sorted(prompts)
    policy = load_policy(args.checkpoint, WorldCore(world), driven)
    personas = getattr(args, "personas", None) or scene_personas(args.population, args.agents, colors, args.seed)
    frames = []
    bar = tqdm(total=args.steps, desc="act", unit="step", disable=not args.progress, file=sys.stderr)

    def on_step(t, state, _):
        if args.render is not None:
            from mirrorhall.envs.render import render_rgb

            frames.append(render_rgb(world, state))
        if t:
            bar.update(1)

    episode = run_scene(world, personas, args.steps, args.seed, hypotheses=pop.hypotheses(colors, args.agents),
                        on_step=on_step, drivers=[policy.driver([prompts[a] for a in driven], schedule)])
    bar.close()
    labels = {a: f"model: {prompts[a]!r}" + "".join(
        f", from step {t}: {p[a]!r}" for t, p in sorted(schedule.items()) if a in p) for a in driven}
    print(summary_table(episode, labels))
    if args.render is not None:
        from mirrorhall.envs.render import save_animation

        save_animation(frames, args.render)
        print(f"animation: {args.render} ({len(frames)} frames)")
    return 0


def cmd_probe(args) -> int:
    from mirrorhall.agents.populations import get_population
    from mirrorhall.analysis.common import ModelProbe
    from mirrorhall.analysis.report import PROBES, run_probe

    names = list(PROBES) if args.name == "all" else [args.name]
    if args.name != "all" and args.name not in PROBES:
        raise UsageError(f"unknown probe {args.name!r}; allowed: {', '.join(PROBES)}, all")
    probe = ModelProbe(args.checkpoint, threads=args.threads or None)
    population = args.population or probe.meta.get("dataset", {}).get("population") or "lab"
    get_population(population)
    for name in names:
        r = run_probe(name, probe, args.out, population, seed=args.seed, episodes=args.episodes, scale=args.scale)
        shown = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.get("summary", {}).items()
                          if not isinstance(v, list))
        print(f"{name}: {shown} ({r['seconds']} s) -> {args.out}/{name}.json")
    return 0


def cmd_report(args) -> int:
    from mirrorhall.analysis.report import write_report

    print(f"report: {write_report(args.dir)}")
    return 0


def cmd_export(args) -> int:
    from mirrorhall.imitation.checkpoint import export_checkpoint

    print(f"exported: {export_checkpoint(args.checkpoint, args.out)}")
    return 0


REFERENCE = Path(__file__).resolve().parents[1] / "checkpoints" / "reference"


def cmd_demo(args) -> int:
    import time

    out = Path(args.out)
    t0 = time.perf_counter()
    if args.from_scratch:
        checkpoint = _demo_from_scratch(out, args)
    else:
        checkpoint = Path(args.checkpoint) if args.checkpoint else REFERENCE
        if not (checkpoint / "checkpoint.json").exists() and not (checkpoint / "latest.json").exists():
            raise UsageError(f"no checkpoint at {checkpoint}; pass --checkpoint RUN or use --from-scratch")
    print(f"== 1. a crowd scene with the model ({checkpoint})")
    _demo_scene(checkpoint, out, args.seed, args.progress)
    print("== 2. every probe at demo scale")
    probe_args = argparse.Namespace(name="all", checkpoint=str(checkpoint), out=str(out / "probes"), seed=args.seed,
                                    episodes=None, scale="small", population=None, threads=0)
    cmd_probe(probe_args)
    from mirrorhall.analysis.report import write_report

    report = write_report(out / "probes")
    print(f"done in {time.perf_counter() - t0:.0f} s:\n  animation: {out / 'scene.gif'}\n  report:    {report}")
    return 0


def _demo_scene(checkpoint: Path, out: Path, seed: int, progress: bool) -> None:
    """Agent 0 is the model: itself for 20 steps, then agent 2, then agent 1 (its imitator) imitating it."""
    from mirrorhall.agents.personas import Imitator, Trait
    from mirrorhall.imitation.checkpoint import load_model

    model, _, meta = load_model(checkpoint)
    population = meta.get("dataset", {}).get("population", "lab")
    personas = list(scene_personas(population, 12, model.config.n_colors, seed))
    personas[1] = Imitator(0, 0.9, Trait("green", "avoid", "casual"))
    personas[2] = Trait("red", "approach", "focused")
    args = argparse.Namespace(
        checkpoint=str(checkpoint), population=population, agents=12, steps=60, seed=seed, view_radius=None,
        prompt=["agent_0=behave as yourself"],
        switch=["20:agent_0=behave as agent 2", "40:agent_0=pretend to be agent 1 pretending to be you"],
        render=str(out / "scene.gif"), progress=progress, personas=personas)
    cmd_act(args)


def _demo_from_scratch(out: Path, args) -> Path:
    from mirrorhall.imitation.dataset import GenerateConfig, generate
    from mirrorhall.imitation.train import TrainConfig, train

    print("== 0. the pipeline at small scale: generate, train")
    data, run = out / "data", out / "run"
    manifest = generate(GenerateConfig(population="lab", episodes=256, seed=args.seed), data)
    print(f"  {data}: {manifest['samples']} labelled samples")
    resume = (run / "latest.json").exists()
    last = train(TrainConfig(data=str(data), out=str(run), steps=600, size="small", eval_every=300,
                             checkpoint_every=300, seed=args.seed), resume=resume, progress=args.progress)
    print(f"  {run}: step {last.get('step')}, held-out KL {last.get('eval_kl', float('nan')):.3f}")
    return run


def _add_compare_direct(sub) -> None:
    p = sub.add_parser("compare-direct", help="PPO on log pi_test(a|s) vs the model watching pi_test: CE vs env steps",
                       description="Direct optimisation vs generalisation + inference: for a few trait personas "
                                   "pi_test, the cross-entropy against pi_test in held-out situations of (a) PPO "
                                   "trained online with reward log pi_test(a|s) and (b) the shared model told "
                                   "'behave as agent k' after watching pi_test for K steps, as a function of "
                                   "environment steps. Writes DIR/compare_direct.json, .png and .md.")
    p.add_argument("--checkpoint", required=True, help="checkpoint or training run folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=_positive("--seed"), default=0)
    p.add_argument("--personas", type=_positive("--personas"), default=4, help="trait personas pi_test (default 4)")
    p.add_argument("--iterations", type=_positive("--iterations"), default=10,
                   help="PPO iterations per persona (default 10)")
    p.add_argument("--batch", type=_positive("--batch"), default=1000,
                   help="env steps sampled per PPO iteration (default 1000)")
    p.add_argument("--episodes", type=_positive("--episodes"), default=8, help="held-out scenes per persona (default 8)")
    p.add_argument("--population", default=None, help="default: the checkpoint's training population")
    p.add_argument("--threads", type=_positive("--threads"), default=0, help="torch threads (0: default)")
    p.set_defaults(func=cmd_compare_direct)


def cmd_compare_direct(args) -> int:
    from mirrorhall.agents.populations import get_population

    if args.personas < 1 or args.episodes < 1 or args.batch < 1:
        raise UsageError("--personas, --episodes and --batch must be >= 1")
    if args.population is not None:
        get_population(args.population)
    from mirrorhall.analysis.compare_direct import run

    r = run(args.checkpoint, args.out, seed=args.seed, personas=args.personas, iterations=args.iterations,
            episodes=args.episodes, population=args.population, train_batch_size=args.batch,
            threads=args.threads or None)
    s = r["summary"]
    k = max(r["ks"])
    print(f"compare-direct: model CE at K={k}: {s[f'model_ce_at_K{k}']:.3f}; PPO CE after "
          f"{s['ppo_env_steps_final']} env steps: {s['ppo_ce_final']:.3f} (untrained {s['ppo_ce_untrained']:.3f}); "
          f"floor {s['entropy_floor']:.3f} ({r['seconds']} s) -> {args.out}/compare_direct.md")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:  # OSError: unusable paths (missing, too long, read-only, ...)
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"mirrorhall: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mirrorhall: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
