"""Acting speed: env-steps/s of a scene whose agents are all driven by the model.

    .venv/bin/python benchmarks/acting.py --checkpoint RUN [--steps 100] [--threads 2]

Target (docs/benchmarks.md): >= 100 env-steps/s with 32 model-driven agents on 2 cores.
Beside it, the same scene of scripted personas, for scale.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mirrorhall import streams
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import run_scene
from mirrorhall.envs.core import WorldConfig, WorldCore
from mirrorhall.imitation.checkpoint import load_model, load_policy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, _, meta = load_model(args.checkpoint)
    for n in (8, 32, 64):
        size = 11 if n <= 32 else 15
        world = WorldConfig(n_agents=n, width=size, height=size, n_colors=model.config.n_colors,
                            max_cycles=args.steps)
        personas = get_population("crowd").sample_scene(n, world.n_colors, streams.rng(streams.BENCHMARK, 0))
        policy = load_policy(args.checkpoint, WorldCore(world), range(n))
        run_scene(world, personas, 5, seed=0, drivers=[policy.driver()])  # warm up
        t0 = time.perf_counter()
        run_scene(world, personas, args.steps, seed=1, drivers=[policy.driver()])
        model_sps = args.steps / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_scene(world, personas, args.steps, seed=1)
        scripted_sps = args.steps / (time.perf_counter() - t0)
        print(json.dumps({"agents": n, "model_driven": n, "parameters": meta.get("parameters"),
                          "threads": args.threads, "env_steps_per_s": round(model_sps, 1),
                          "scripted_env_steps_per_s": round(scripted_sps, 1)}))


if __name__ == "__main__":
    main()
