"""Agent-steps/s of the world, its batched core, scripted persona selection and two peers.

    .venv/bin/python benchmarks/env_throughput.py [--seconds 2.0]

One run measures, each for about ``--seconds`` of wall time (best of three rounds):

* dict API: ``mirrorhall_v0.parallel_env`` (B = 1) stepped with an action dict for every agent,
  observations built for every agent, at 8, 32 and 64 agents (11x11 grid, 15x15 for 64);
* batched core: ``WorldCore.step`` of B worlds x N agents, B x N from about 1e3 to 1e5;
* persona selection: what ``run_scene`` does to choose 32 scripted agents' actions
  (``situations`` -> ``Cast.probs`` -> ``sample_actions``, population ``crowd``), against one
  core step of the same worlds, at B = 1 and B = 64; its cost ratio to that step, and the
  ratios of three of its parts timed alone (the situations; the exponentials of the imitators'
  45 hypotheses x 5 actions; their mixture: 45 softmaxes averaged by belief);
* peers: PettingZoo ``sisl/pursuit_v5`` and ``mpe2`` ``simple_spread_v3`` parallel envs with
  random actions at 8 and 32 agents. They need the ``bench`` extra
  (``pip install -e ".[bench]"``); a missing package is reported on one line and skipped.

Random actions are drawn before the timed loop; episodes are reset inside it when they end
(every env at its default ``max_cycles``), so resets count in every figure. An agent-step is one
agent acting once. Prints one JSON line per measurement, then a markdown table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
import warnings
from collections.abc import Callable

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.bayes import softmax
from mirrorhall.agents.cast import IMITATOR, Cast, sample_actions
from mirrorhall.agents.populations import get_population
from mirrorhall.envs import mirrorhall_v0
from mirrorhall.envs.core import N_ACTIONS, WorldConfig, WorldCore
from mirrorhall.envs.perception import situations

POOL = 64  # pre-drawn random action sets, cycled


def timed(step: Callable[[], None], seconds: float, rounds: int = 3) -> float:
    """Best calls/s of ``step`` over ``rounds`` rounds of about ``seconds / rounds`` each."""
    step()  # warm up
    best = 0.0
    for _ in range(rounds):
        calls, t0 = 0, time.perf_counter()
        while True:
            for _ in range(8):
                step()
            calls += 8
            dt = time.perf_counter() - t0
            if dt >= seconds / rounds:
                break
        best = max(best, calls / dt)
    return best


def grid_size(n: int) -> int:
    return 11 if n <= 32 else 15


def row(what: str, env: str, agents: int, batch: int, grid: str, calls_per_s: float, **extra) -> dict:
    """One measurement: ``calls_per_s`` calls, each stepping ``batch`` worlds of ``agents``."""
    return {"what": what, "env": env, "agents": agents, "batch": batch, "grid": grid,
            "env_steps_per_s": calls_per_s * batch, "agent_steps_per_s": calls_per_s * batch * agents, **extra}


def core_stepper(core: WorldCore, state, rng: np.random.Generator) -> Callable[[], None]:
    """One ``WorldCore.step`` of ``state``'s worlds per call, with random actions drawn beforehand."""
    pool = rng.integers(0, N_ACTIONS, (8, *state.last_action.shape))
    k = [0]

    def step() -> None:
        core.step(state, pool[k[0] % 8], rng)
        k[0] += 1

    return step


def parallel_rate(env, seconds: float, seed: int = 0) -> float:
    """Env steps/s of any PettingZoo ParallelEnv with random actions, resetting at episode end."""
    env.reset(seed=seed)
    rng = streams.rng(streams.BENCHMARK, seed)
    agents = list(env.possible_agents)
    sizes = [env.action_space(a).n for a in agents]
    pool = [{a: int(x) for a, x in zip(agents, row, strict=True)}  # plain ints
            for row in rng.integers(0, sizes, (POOL, len(agents)))]
    k = [0]

    def step() -> None:
        if not env.agents:
            env.reset()
        acts = pool[k[0] % POOL]
        k[0] += 1
        env.step(acts if len(env.agents) == len(agents) else {a: acts[a] for a in env.agents})

    return timed(step, seconds)


def dict_api(n: int, seconds: float) -> dict:
    size = grid_size(n)
    rate = parallel_rate(mirrorhall_v0.parallel_env(n_agents=n, width=size, height=size), seconds)
    return row("dict API", "mirrorhall_v0 ParallelEnv", n, 1, f"{size}x{size}", rate)


def core_step(n: int, batch: int, seconds: float) -> dict:
    size = grid_size(n)
    core = WorldCore(WorldConfig(n_agents=n, width=size, height=size))
    rng = streams.rng(streams.BENCHMARK, 0)
    rate = timed(core_stepper(core, core.reset(batch, rng), rng), seconds)
    return row("batched core", "WorldCore.step", n, batch, f"{size}x{size}", rate)


def persona_selection(n: int, batch: int, seconds: float) -> list[dict]:
    """Selection (situations -> probabilities -> sampling) vs one core step of the same worlds."""
    size = grid_size(n)
    cfg = WorldConfig(n_agents=n, width=size, height=size)
    rng = streams.rng(streams.BENCHMARK, 0)
    pop = get_population("crowd")
    cast = Cast([pop.sample_scene(n, cfg.n_colors, rng) for _ in range(batch)], cfg)
    core = WorldCore(cfg)
    state = core.reset(batch, rng)
    cstate = cast.initial_state()
    for _ in range(5):  # a few steps in, so last actions and beliefs are not the initial ones
        sit = situations(core, state)
        a = sample_actions(cast.probs(sit, cstate), rng)
        core.step(state, a, rng)
        cstate = cast.observe(cstate, sit, a)
    frozen = state.copy()
    step = core_stepper(core, state, rng)

    def select() -> None:
        sample_actions(cast.probs(situations(core, frozen), cstate), rng)

    # three parts of every exact selection, timed alone: the situations; the exponentials of the
    # imitators' 45 hypotheses x 5 actions (one contiguous np.exp, its fastest form here); and
    # their mixture (45 softmaxes averaged by belief)
    imitators, h = int((cast.params.kind == IMITATOR).sum()), len(cast.hypotheses)
    u = rng.normal(size=(imitators, h, N_ACTIONS))
    e = np.empty_like(u)

    def situations_only() -> None:
        situations(core, frozen)

    def exps() -> None:
        np.exp(u, out=e)

    belief = rng.normal(size=(imitators, h))

    def mixture() -> None:  # what the imitators compute from their utilities: 45 softmaxes, averaged
        np.einsum("ph,pha->pa", softmax(belief), softmax(u))

    sel = timed(select, seconds)
    stp = timed(step, seconds)
    sit = timed(situations_only, seconds)
    ex = timed(exps, seconds)
    mix = timed(mixture, seconds)
    parts = [
        ("persona selection", "crowd: situations+probs+sample", sel),
        ("  of which: situations alone", "WorldCore.situations", sit),
        (f"  of which: exp of {imitators} imitators' hypotheses alone", f"np.exp over ({imitators}, {h}, 5)", ex),
        ("  of which: the imitators' mixture alone, from their utilities", "softmax + belief average", mix),
    ]
    grid = f"{size}x{size}"
    return [*(row(what, env, n, batch, grid, rate, cost_vs_core_step=stp / rate) for what, env, rate in parts),
            row("core step (same worlds)", "WorldCore.step", n, batch, grid, stp)]


def peer(name: str, module: str, n: int, seconds: float, **kwargs) -> dict | None:
    """A peer ParallelEnv with ``kwargs``; None (after one printed line) if it is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = importlib.import_module(module)
    except ImportError as err:
        print(f"skipped {name}: {err} (install the bench extra: pip install -e \".[bench]\")")
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = mod.parallel_env(**kwargs)
        rate = parallel_rate(env, seconds)
        env.close()
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return row("peer dict API", f"{name}({args})", n, 1, "-", rate)


def table(rows: list[dict]) -> str:
    lines = ["| measurement | env | agents | B | B x N | grid | env-steps/s | agent-steps/s | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        note = f"{r['cost_vs_core_step']:.2f}x a core step" if "cost_vs_core_step" in r else ""
        lines.append(f"| {r['what']} | {r['env']} | {r['agents']} | {r['batch']} | "
                     f"{r['agents'] * r['batch']:,} | {r['grid']} | {r['env_steps_per_s']:,.0f} | "
                     f"{r['agent_steps_per_s']:,.0f} | {note} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="wall time per measurement")
    args = ap.parse_args()
    s = args.seconds
    rows: list[dict] = []

    def emit(row: dict | None) -> None:
        if row is not None:
            rows.append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}),
                  flush=True)

    for n in (8, 32, 64):
        emit(dict_api(n, s))
    for n, batch in ((32, 32), (64, 16), (32, 320), (64, 160), (32, 3200), (64, 1600)):
        emit(core_step(n, batch, s))
    for batch in (1, 64):
        for row in persona_selection(32, batch, s):
            emit(row)
    for n in (8, 32):
        emit(peer("pursuit_v5", "pettingzoo.sisl.pursuit_v5", n, s, n_pursuers=n))
    for n in (8, 32):
        emit(peer("simple_spread_v3", "mpe2.simple_spread_v3", n, s, N=n))
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
