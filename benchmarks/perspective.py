"""What a column set with history costs (the perspective columns, or the pickup columns): building a
dataset's model arrays, and acting, with and without.

    .venv/bin/python benchmarks/perspective.py --data DIR [--columns perspective|pickups] [--episodes 200] [--repeats 3]

DIR is a dataset of ``mirrorhall generate`` (a partial view shows the whole cost: under full view
the same (Ni, Nj) table is not built). Each line is one measurement; the forms alternate, and the
best of ``--repeats`` is kept. Acting: ``ModelPolicy`` driving every agent of a scene of the
dataset's world with a freshly initialised ``small`` model (the speed does not depend on weights).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from mirrorhall import streams
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import run_scene
from mirrorhall.envs.core import WorldCore
from mirrorhall.imitation.batches import episode_arrays
from mirrorhall.imitation.model import ModelConfig, MultiPolicyModel
from mirrorhall.imitation.policy import ModelPolicy
from mirrorhall.imitation.shards import Dataset
from mirrorhall.imitation.tokenizer import make_tokenizer
from mirrorhall.imitation.train import MODEL_SIZES


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--columns", choices=("perspective", "pickups"), default="perspective")
    args = ap.parse_args()
    name = args.columns
    torch.set_num_threads(1)
    data = Dataset(args.data, verify=False)
    episodes = [ep for _, ep in zip(range(args.episodes), data.episodes(), strict=False)]
    best = {False: float("inf"), True: float("inf")}
    for _ in range(args.repeats):
        for on in (False, True):
            t0 = time.perf_counter()
            for ep in episodes:
                episode_arrays(ep, data.world, **{name: on})
            best[on] = min(best[on], (time.perf_counter() - t0) / len(episodes))
    print(json.dumps({"what": "episode arrays", "columns": name, "view_radius": data.world.view_radius,
                      "agents": data.world.n_agents, "steps": int(episodes[0].actions.shape[0]),
                      "ms_per_episode": round(best[False] * 1e3, 2),
                      "ms_per_episode_with": round(best[True] * 1e3, 2),
                      "ratio": round(best[True] / best[False], 2)}))

    tokenizer = make_tokenizer("ngram")
    world = replace(data.world, max_cycles=args.steps)
    personas = get_population("lab").sample_scene(world.n_agents, world.n_colors, streams.rng(streams.BENCHMARK, 0))
    speed = {}
    for on in (False, True):
        torch.manual_seed(0)
        config = ModelConfig.for_tokenizer(tokenizer, n_colors=world.n_colors, **{name: on}, **MODEL_SIZES["small"])
        policy = ModelPolicy(MultiPolicyModel(config).eval(), tokenizer, WorldCore(world), range(world.n_agents))
        run_scene(world, personas, 3, seed=0, drivers=[policy.driver()])  # warm up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run_scene(world, personas, args.steps, seed=1, drivers=[policy.driver()])
            times.append(time.perf_counter() - t0)
        speed[on] = args.steps / min(times)
    print(json.dumps({"what": "acting", "columns": name, "agents": world.n_agents, "model_driven": world.n_agents,
                      "env_steps_per_s": round(speed[False], 1),
                      "env_steps_per_s_with": round(speed[True], 1),
                      "ratio": round(speed[True] / speed[False], 2)}))


if __name__ == "__main__":
    main()
