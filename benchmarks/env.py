"""World stepping speed: the batched core vs the PettingZoo ParallelEnv, random actions.

    .venv/bin/python benchmarks/env.py [--steps 2000]

Reports env steps/s (one step of every agent of one world) for the ParallelEnv (B = 1,
observations built for every agent), the batched core stepping B = 64 worlds, and the core also
computing every agent's situation (what scripted personas read), at 8, 32 and 64 agents.
"""

from __future__ import annotations

import argparse
import json
import time

from mirrorhall import streams
from mirrorhall.envs import mirrorhall_v0
from mirrorhall.envs.core import WorldConfig, WorldCore
from mirrorhall.envs.perception import situations


def parallel_env_rate(n: int, size: int, steps: int) -> float:
    env = mirrorhall_v0.parallel_env(n_agents=n, width=size, height=size, max_cycles=steps + 1)
    env.reset(seed=0)
    rng = streams.rng(streams.BENCHMARK, 0)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step({a: int(x) for a, x in zip(env.agents, rng.integers(0, 5, n), strict=True)})
    return steps / (time.perf_counter() - t0)


def core_rate(n: int, size: int, steps: int, batch: int = 64, with_situations: bool = False) -> float:
    core = WorldCore(WorldConfig(n_agents=n, width=size, height=size))
    rng = streams.rng(streams.BENCHMARK, 0)
    state = core.reset(batch, rng)
    t0 = time.perf_counter()
    for _ in range(steps):
        if with_situations:
            situations(core, state)
        core.step(state, rng.integers(0, 5, (batch, n)), rng)
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args()
    for n in (8, 32, 64):
        size = 11 if n <= 32 else 15
        pe = parallel_env_rate(n, size, args.steps)
        co = core_rate(n, size, max(args.steps // 8, 50))
        cs = core_rate(n, size, max(args.steps // 8, 50), with_situations=True)
        print(json.dumps({"agents": n, "grid": f"{size}x{size}", "parallel_env_steps_per_s": round(pe),
                          "core_env_steps_per_s": round(co), "core_vs_parallel_env": round(co / pe, 1),
                          "core_with_situations_env_steps_per_s": round(cs)}))


if __name__ == "__main__":
    main()
