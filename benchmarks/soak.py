"""Soak: memory stays flat over long runs of the batched core and of a model-driven scene.

    .venv/bin/python benchmarks/soak.py [--env-steps 1000000] [--agents 64] [--worlds 64]
        [--driver personas|random] [--model-steps 5000] [--model-agents 32] [--scene-agents 48]
        [--checkpoint RUN] [--threads 1] [--bound-mib 50]

1. Core scene: ``--agents`` agents in ``--worlds`` worlds of the batched core, episodes of
   ``--episode-steps`` steps with a reset (and, with the ``personas`` driver, a fresh cast from
   the crowd population) between them, until ``--env-steps`` env steps (one step of one world).
   ``personas``: situations, exact probabilities, sampled actions, world step, imitator beliefs,
   as in ``run_scene`` but recording nothing; ``random``: uniform actions, the world step only.
2. Model-driven scene: ``--model-agents`` of ``--scene-agents`` agents driven by the checkpoint
   through ``ModelPolicy`` (incremental inference, one prompt each), the rest scripted, for
   ``--model-steps`` steps in episodes with fresh prompts, casts and model memory. Without
   ``--checkpoint`` a tiny model is trained first on a tiny dataset in a temporary folder.

RSS is read from /proc/self/status (VmRSS) every ``--sample-every`` env steps. Threshold: RSS at
the end minus RSS after warm-up (the first episode, or the first tenth of the run if later)
below ``--bound-mib`` MiB (default 50); each scene prints one JSON line and the script exits 1 if
a scene grows past the bound.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.cast import Cast, sample_actions
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import seeded_generators
from mirrorhall.envs.core import WorldConfig, WorldCore
from mirrorhall.envs.perception import situations

PROMPTS = ("behave as yourself", "behave as agent 3", "pretend to be agent 5 pretending to be you",
           "behave as a focused agent that likes red gems and avoids others", "collect 2 gems in the next 10 steps")


def rss_mib() -> float:
    """Resident set size of this process in MiB, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


class Memory:
    """RSS samples over a run and the growth after warm-up; ``report`` (if given) is called with a
    progress line about every tenth of ``total`` steps."""

    def __init__(self, warmup_steps: int, total: int = 0, report=None):
        self.warmup_steps = warmup_steps
        self.start = rss_mib()
        self.samples: list[tuple[int, float]] = []
        self.total, self.report, self.t0, self.next_report = total, report, time.perf_counter(), 0

    def sample(self, steps: int) -> None:
        self.samples.append((steps, rss_mib()))
        if self.report and self.total and steps >= self.next_report:
            self.report({"progress": round(steps / self.total, 2), "env_steps": steps,
                         "rss_mib": round(self.samples[-1][1], 1),
                         "seconds": round(time.perf_counter() - self.t0, 1)})
            self.next_report += max(self.total // 10, 1)

    def summary(self, bound_mib: float) -> dict:
        after = [(s, r) for s, r in self.samples if s >= self.warmup_steps] or self.samples[-1:]
        warm, end = after[0][1], self.samples[-1][1]
        steps = np.array([s for s, _ in after], dtype=float)
        rss = np.array([r for _, r in after])
        # least-squares line through the samples after warm-up, over their span: robust to one spike
        fitted = float(np.polyfit(steps, rss, 1)[0] * np.ptp(steps)) if len(after) > 2 and np.ptp(steps) > 0 else 0.0
        return {"rss_start_mib": round(self.start, 1), "rss_after_warmup_mib": round(warm, 1),
                "rss_end_mib": round(end, 1), "rss_max_mib": round(max(r for _, r in self.samples), 1),
                "growth_mib": round(end - warm, 2), "fitted_growth_mib": round(fitted, 2),
                "bound_mib": bound_mib, "ok": end - warm < bound_mib, "samples": len(self.samples)}


def core_soak(env_steps: int = 1_000_000, agents: int = 64, worlds: int = 64, episode_steps: int = 100,
              driver: str = "personas", sample_every: int = 10_000, size: int = 15, seed: int = 0,
              bound_mib: float = 50.0, report=None) -> dict:
    """Step ``worlds`` x ``agents`` worlds of the core until ``env_steps`` env steps; memory summary."""
    if driver not in ("personas", "random"):
        raise ValueError(f"driver must be personas or random, got {driver!r}")
    config = WorldConfig(n_agents=agents, width=size, height=size, max_cycles=episode_steps)
    core = WorldCore(config)
    pop = get_population("crowd")
    hypotheses = pop.hypotheses(config.n_colors, agents)
    world_rng, policy_rng = seeded_generators(seed)
    scene_rng = streams.rng(streams.SOAK_CORE_PERSONAS, seed)
    mem = Memory(warmup_steps=max(episode_steps * worlds, env_steps // 10), total=env_steps, report=report)
    done, next_sample = 0, 0
    t0 = time.perf_counter()
    while done < env_steps:
        state = core.reset(worlds, world_rng)
        if driver == "personas":
            cast = Cast([pop.sample_scene(agents, config.n_colors, scene_rng) for _ in range(worlds)], config,
                        hypotheses)
            cstate = cast.initial_state()
        for _ in range(episode_steps):
            if done >= next_sample:
                mem.sample(done)
                next_sample += sample_every
            if driver == "personas":
                sit = situations(core, state)
                actions = sample_actions(cast.probs(sit, cstate), policy_rng)
                core.step(state, actions, world_rng)
                cstate = cast.observe(cstate, sit, actions)
            else:
                core.step(state, policy_rng.integers(0, 5, (worlds, agents)), world_rng)
            done += worlds
            if done >= env_steps:
                break
    seconds = time.perf_counter() - t0
    mem.sample(done)
    return {"scene": "core", "driver": driver, "agents": agents, "worlds": worlds, "grid": f"{size}x{size}",
            "episode_steps": episode_steps, "env_steps": done, "seconds": round(seconds, 1),
            "env_steps_per_s": round(done / seconds), **mem.summary(bound_mib)}


def model_soak(checkpoint, steps: int = 5000, scene_agents: int = 48, model_agents: int = 32,
               episode_steps: int = 200, sample_every: int = 100, size: int = 15, threads: int = 1,
               seed: int = 0, bound_mib: float = 50.0, report=None) -> dict:
    """A scene with ``model_agents`` model-driven agents for ``steps`` env steps; memory summary."""
    import torch

    from mirrorhall.imitation.checkpoint import load_model, load_policy

    torch.set_num_threads(threads)
    model, _, meta = load_model(checkpoint)
    config = WorldConfig(n_agents=scene_agents, width=size, height=size, n_colors=model.config.n_colors,
                         max_cycles=episode_steps)
    core = WorldCore(config)
    driven = list(range(model_agents))
    policy = load_policy(checkpoint, core, driven)
    pop = get_population("crowd")
    hypotheses = pop.hypotheses(config.n_colors, scene_agents)
    world_rng, policy_rng = seeded_generators(seed)
    scene_rng = streams.rng(streams.SOAK_MODEL_PERSONAS, seed)
    mem = Memory(warmup_steps=max(episode_steps, steps // 10), total=steps, report=report)
    done, next_sample = 0, 0
    t0 = time.perf_counter()
    while done < steps:
        state = core.reset(1, world_rng)
        cast = Cast([pop.sample_scene(scene_agents, config.n_colors, scene_rng)], config, hypotheses)
        cstate = cast.initial_state()
        prompts = [PROMPTS[int(k)] for k in scene_rng.integers(0, len(PROMPTS), model_agents)]
        mstate = policy.initial_state(1, prompts)
        for t in range(episode_steps):
            if done >= next_sample:
                mem.sample(done)
                next_sample += sample_every
            if t == episode_steps // 2:  # a prompt switch mid-episode, as `act --switch` does
                mstate = policy.set_prompt(mstate, driven[0], PROMPTS[t % len(PROMPTS)])
            sit = situations(core, state)
            p = cast.probs(sit, cstate)
            feats, vis = policy.features(state)
            p[:, policy.agents] = policy.probs(mstate, feats, vis)
            actions = sample_actions(p, policy_rng)
            mstate = policy.observe(mstate, feats, vis, actions)
            core.step(state, actions, world_rng)
            cstate = cast.observe(cstate, sit, actions)
            done += 1
            if done >= steps:
                break
    seconds = time.perf_counter() - t0
    mem.sample(done)
    return {"scene": "model", "checkpoint": str(checkpoint), "parameters": meta.get("parameters"),
            "scene_agents": scene_agents, "model_agents": model_agents, "grid": f"{size}x{size}",
            "threads": threads, "episode_steps": episode_steps, "env_steps": done, "seconds": round(seconds, 1),
            "env_steps_per_s": round(done / seconds, 1), **mem.summary(bound_mib)}


def tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Generate a tiny dataset and train a tiny model on it in ``folder``; returns the run folder."""
    from mirrorhall.imitation.generate import GenerateConfig, generate
    from mirrorhall.imitation.train import TrainConfig, train

    folder = Path(folder)
    generate(GenerateConfig(episodes=16, episodes_per_shard=4, steps=20, agents=4, seed=seed), folder / "data")
    train(TrainConfig(data=str(folder / "data"), out=str(folder / "run"), steps=40, size="tiny", eval_every=40,
                      checkpoint_every=40, threads=1, seed=seed), progress=False)
    return folder / "run"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import os

    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env-steps", type=int, default=1_000_000)
    ap.add_argument("--agents", type=int, default=64)
    ap.add_argument("--worlds", type=int, default=64)
    ap.add_argument("--episode-steps", type=int, default=100)
    ap.add_argument("--driver", choices=("personas", "random"), default="personas")
    ap.add_argument("--model-steps", type=int, default=5000)
    ap.add_argument("--model-agents", type=int, default=32)
    ap.add_argument("--scene-agents", type=int, default=48)
    ap.add_argument("--checkpoint", default=None, help="default: train a tiny model first (in a temp folder)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bound-mib", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    def report(line: dict) -> None:
        print(json.dumps(line), file=sys.stderr, flush=True)

    print(json.dumps({"machine": machine(), "command": " ".join(["benchmarks/soak.py", *sys.argv[1:]])}), flush=True)
    results = []
    if args.env_steps > 0:
        results.append(core_soak(args.env_steps, args.agents, args.worlds, args.episode_steps, args.driver,
                                 sample_every=max(args.env_steps // 100, args.worlds), seed=args.seed,
                                 bound_mib=args.bound_mib, report=report))
        print(json.dumps(results[-1]), flush=True)
    if args.model_steps > 0:
        with tempfile.TemporaryDirectory(prefix="mh-soak-") as tmp:
            checkpoint = args.checkpoint or tiny_checkpoint(Path(tmp), args.seed)
            results.append(model_soak(checkpoint, args.model_steps, args.scene_agents, args.model_agents,
                                      sample_every=max(args.model_steps // 100, 1), threads=args.threads,
                                      seed=args.seed, bound_mib=args.bound_mib, report=report))
        print(json.dumps(results[-1]), flush=True)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
