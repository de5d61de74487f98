"""``compare-direct`` itself: the model's arm (scenes where it watches pi_test, its cross-entropy
curve beside Bayes and the prior), the held-out situations both arms are scored in, and ``run``,
which runs both arms per persona (every PPO learner for every run seed) and writes the outputs
(see the package docstring).

Each finished PPO run is saved as ``DIR/runs/LEARNER-pP-sS.json`` (its curve and settings) and,
for the vectorised learners, ``.safetensors`` (the policy's weights); with ``resume`` a run whose
file matches the settings is read back instead of trained again.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.bayes import BayesObserver, HypothesisSet
from mirrorhall.agents.cast import trait_probs
from mirrorhall.agents.personas import Trait
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import run_scene
from mirrorhall.analysis.common import (
    ModelProbe,
    Scene,
    cross_entropy,
    entropy,
    mean_ci,
)
from mirrorhall.analysis.compare_direct.ratio import aggregate, carried, steps_to_reach
from mirrorhall.analysis.compare_direct.report import LOG5, NAME, write_outputs
from mirrorhall.analysis.compare_direct.vecppo import LEARNERS, steps_per_iteration, train_run
from mirrorhall.envs.core import WorldConfig, WorldCore
from mirrorhall.errors import ConfigError
from mirrorhall.files import atomic_write
from mirrorhall.imitation.checkpoint import load_policy

KS = (0, 1, 2, 5, 10, 20, 40)

# --- (b) the model after K steps of watching -----------------------------------------------------


def draw_personas(population: str, n_colors: int, count: int, rng) -> list[Trait]:
    """``count`` distinct trait personas (no follow) of the population's training split."""
    combos = [c for c in get_population(population).combos(n_colors, "train") if c[1] != "follow"]
    if count > len(combos):
        raise ConfigError(f"--personas: at most {len(combos)} distinct trait personas in this population")
    return [Trait(*combos[i]) for i in rng.choice(len(combos), size=count, replace=False)]


def model_scenes(probe: ModelProbe, world: WorldConfig, target: Trait, population: str, episodes: int,
                 steps: int, seed: int, rng) -> tuple[Scene, np.ndarray]:
    """E scenes where agent k_e = 1 + e % (N - 1) is ``target`` and the model is agent 0."""
    pop = get_population(population)
    n = world.n_agents
    ks = 1 + np.arange(episodes) % (n - 1)
    rows = []
    for k in ks:
        row = list(pop.sample_scene(n, world.n_colors, rng, split="train"))
        row[k] = target
        rows.append(row)
    policy = load_policy(probe.path, WorldCore(world), [0])
    return Scene.from_episode(run_scene(world, rows, steps, seed, drivers=[policy.driver()])), ks


def model_curve(probe: ModelProbe, scene: Scene, ks_target: np.ndarray, target: Trait, hyp: HypothesisSet,
                ks=KS) -> dict[int, dict[str, np.ndarray]]:
    """Per K: CE of the model told "behave as agent k", of the Bayes observer and of the prior."""
    b = ks_target.size
    w = np.arange(b)
    n_colors, n = scene.config.n_colors, scene.config.n_agents
    codes = HypothesisSet([target] * b, n_colors, n)
    observer = BayesObserver(hyp)
    log_post = observer.prior((b,))
    prompts = [f"behave as agent {k}" for k in ks_target]
    out = {}
    for t in range(max(ks) + 1):
        if t in ks:
            ego = scene.situation(t, w, np.zeros(b, np.int64))
            truth = trait_probs(ego, codes.likes, codes.social, codes.beta)
            model = probe.query(scene, w, np.zeros(b), np.full(b, t), prompts)
            out[t] = {"model": cross_entropy(truth, model),
                      "bayes": cross_entropy(truth, observer.predictive(log_post, ego)),
                      "prior": cross_entropy(truth, observer.predictive(observer.prior((b,)), ego)),
                      "entropy": entropy(truth)}
        if t < max(ks):
            log_post = observer.update(log_post, scene.situation(t, w, ks_target), scene.episode.actions[t, w, ks_target])
    return out


def held_out_set(scene: Scene, target: Trait) -> tuple[np.ndarray, np.ndarray]:
    """Agent 0's observations (S, D) and pi_test's distributions (S, 5) at every step of the scenes."""
    core = WorldCore(scene.config)
    n_colors, n = scene.config.n_colors, scene.config.n_agents
    code = HypothesisSet([target], n_colors, n)
    obs, truth = [], []
    for st, sit in zip(scene.states, scene.situations, strict=True):
        obs.append(core.observations(st)[:, 0])
        s0 = sit.take((slice(None), 0))
        b = s0.ego.shape[0]
        truth.append(trait_probs(s0, np.repeat(code.likes, b), np.repeat(code.social, b), np.repeat(code.beta, b)))
    return np.concatenate(obs), np.concatenate(truth)



# --- the whole comparison ----------------------------------------------------------------------

ALL_LEARNERS = (*LEARNERS, "rllib")
"""``flat`` and ``relational`` (vectorised, ``vecppo``) and ``rllib`` (the RLlib flat MLP, ``learner``)."""
RATIO_KS = (5, 10, 20, 40)
"""The K of the ratio table."""


def _run_path(out: Path, learner: str, persona: int, run_seed: int) -> Path:
    return out / "runs" / f"{learner}-p{persona}-s{run_seed}"


def _save_run(path: Path, record: dict, policy=None) -> None:
    atomic_write(path.with_suffix(".json"), (json.dumps(record, indent=1) + "\n").encode())
    if policy is not None:
        from safetensors.torch import save

        atomic_write(path.with_suffix(".safetensors"),
                     save({k: v.detach().contiguous() for k, v in policy.state_dict().items()}))


def _load_run(path: Path, settings: dict) -> dict | None:
    file = path.with_suffix(".json")
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("settings") == settings else None


def _ppo_record(learner: str, target: Trait, persona: int, run_seed: int, raw: list[dict] | dict,
                floor: np.ndarray, settings: dict) -> dict:
    """A run's JSON: its curve (per evaluation: env steps, CE and KL with intervals over the held-out
    situations) and, for the vectorised learners, its timing."""
    curve = raw["curve"] if isinstance(raw, dict) else raw
    points = []
    for c in curve:
        ce = np.asarray(c["ce"], dtype=np.float64)
        point = {"iteration": int(c["iteration"]), "env_steps": int(c["env_steps"]), "ce": mean_ci(ce),
                 "kl": mean_ci(ce - floor)}
        if "seconds" in c:
            point["seconds"] = c["seconds"]
        points.append(point)
    record = {"learner": learner, "persona": target.describe(), "persona_index": persona, "seed": run_seed,
              "settings": settings, "curve": points}
    if isinstance(raw, dict):
        record.update({k: raw[k] for k in ("converged", "env_steps", "iterations", "seconds", "sample_seconds")})
        record["env_steps_per_s"] = round(raw["env_steps"] / max(raw["seconds"], 1e-9), 1)
    else:
        record.update({"converged": None, "env_steps": points[-1]["env_steps"], "iterations": points[-1]["iteration"]})
    return record


def run(checkpoint, out, seed: int = 0, personas: int = 4, iterations: int = 10, episodes: int = 8,
        agents: int = 8, population: str | None = None, train_batch_size: int = 1000, ks: Sequence[int] = KS,
        learners: Sequence[str] = LEARNERS, seeds: int = 1, budget: int | None = None, worlds: int = 8,
        tolerance: float = 0.02, resume: bool = False, log=print,
        progress: Callable[[int], None] | Callable[[], None] | None = None) -> dict:
    """Run both arms for ``personas`` personas; write DIR/compare_direct.{json,png,md}; return the JSON.

    Every learner of ``learners`` is trained ``seeds`` times per persona, for ``budget`` env steps
    (default ``iterations * train_batch_size``) or until its KL to pi_test on the held-out set is
    at most ``tolerance`` nats and at most the model's KL at every K of the ratio table (so that
    a ratio target a run never met is bounded by the budget, not by an early stop).
    ``progress(n)`` is called with n = 1 once per persona when the model's curve is measured, and
    with the PPO iterations done (1 each, the remainder of a run that stops early or is read back
    at once): ``progress_total(...)`` in all."""
    learners = tuple(learners)
    for name, value in (("personas", personas), ("episodes", episodes), ("agents", agents), ("seeds", seeds),
                        ("worlds", worlds)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if agents < 2:
        raise ConfigError("agents must be >= 2 (the model watches another agent)")
    if iterations < 0:
        raise ConfigError(f"iterations must be >= 0, got {iterations}")
    unknown = [x for x in learners if x not in ALL_LEARNERS]
    if not learners or unknown or len(set(learners)) != len(learners):
        raise ConfigError(f"--learner: choose distinct learners from {', '.join(ALL_LEARNERS)}; got {list(learners)}")
    if not tolerance >= 0:
        raise ConfigError(f"--tolerance must be >= 0 nats, got {tolerance}")
    budget = iterations * train_batch_size if budget is None else int(budget)
    if budget < 0:
        raise ConfigError(f"--budget must be >= 0 env steps, got {budget}")
    tick = (lambda n=1: progress(n)) if progress else (lambda n=1: None)
    t0 = time.perf_counter()
    out = Path(out)
    probe = ModelProbe(checkpoint)
    population = population or probe.meta.get("dataset", {}).get("population") or "crowd"
    pop = get_population(population)
    rng = streams.rng(streams.PROBE_DRAWS[NAME], seed)
    n_colors = probe.model.config.n_colors
    steps = max(ks)
    world = WorldConfig(n_agents=agents, n_colors=n_colors, max_cycles=steps + 1)
    targets = draw_personas(population, n_colors, personas, rng)
    train = [c for c in pop.combos(n_colors, "train") if c[1] != "follow"]
    hyp = HypothesisSet([Trait(*c) for c in train], n_colors, agents)
    ppo_seeds = [streams.int_seed(streams.COMPARE_DIRECT_LEARNER, seed, p) % (2**31 - 1) for p in range(personas)]
    scene_seed = streams.int_seed(streams.PROBE_SCENES[NAME], seed, personas + 1)  # the child after the learners'
    rllib_iterations = math.ceil(budget / train_batch_size)
    settings = {"seed": seed, "population": population, "agents": agents, "episodes": episodes, "budget": budget,
                "batch": train_batch_size, "worlds": worlds, "tolerance": tolerance, "checkpoint": str(checkpoint)}

    per, runs, timing = [], [], {x: {"env_steps": 0, "seconds": 0.0, "sample_seconds": 0.0} for x in learners}
    session = None
    if "rllib" in learners:
        from mirrorhall.raykit import ray_session

        session = ray_session(num_cpus=2)
        session.__enter__()
    try:
        for p, target in enumerate(targets):
            log(f"persona {p + 1}/{personas}: {target.describe()}")
            scene, ks_target = model_scenes(probe, world, target, population, episodes, steps, scene_seed + p, rng)
            model = model_curve(probe, scene, ks_target, target, hyp, ks)
            tick()
            log("  model after K steps: " + ", ".join(f"K={k}: {model[k]['model'].mean():.3f}" for k in ks))
            eval_obs, eval_truth = held_out_set(scene, target)
            floor = entropy(eval_truth)
            # a run stops early only once every ratio target is met too, so a target never met is a budget bound
            stop = min([tolerance, *(float((model[k]["model"] - model[k]["entropy"]).mean()) for k in RATIO_KS if k in ks)])
            for learner in learners:
                for s in range(seeds):
                    path = _run_path(out, learner, p, s)
                    run_settings = {**settings, "learner": learner, "persona": target.to_json(), "run_seed": s}
                    record = _load_run(path, run_settings) if resume else None
                    if record is not None:
                        log(f"  {learner} seed {s}: read back from {path.with_suffix('.json')}")
                        tick(rllib_iterations if learner == "rllib" else _iterations(budget, train_batch_size, worlds))
                    elif learner == "rllib":
                        from mirrorhall.analysis.compare_direct.learner import train_ppo

                        ppo_seed = ppo_seeds[p] if s == 0 else streams.int_seed(streams.COMPARE_DIRECT_RUN, seed, p, s) % (2**31 - 1)
                        raw = train_ppo(world, target, ppo_seed, rllib_iterations, eval_obs, eval_truth, population,
                                        train_batch_size, log=log, on_iteration=tick)
                        record = _ppo_record(learner, target, p, s, raw, floor, run_settings)
                        _save_run(path, record)
                    else:
                        raw = train_run(learner, world, target, population, eval_obs, eval_truth,
                                        streams.sequence(streams.COMPARE_DIRECT_RUN, seed, p, s), budget,
                                        train_batch_size, worlds, max(stop, 0.0), log=log, on_iteration=tick)
                        record = _ppo_record(learner, target, p, s, raw, floor, run_settings)
                        record["stop_kl"] = max(stop, 0.0)
                        _save_run(path, record, raw["policy"])
                        t = timing[learner]
                        t["env_steps"] += raw["env_steps"]
                        t["seconds"] += raw["seconds"]
                        t["sample_seconds"] += raw["sample_seconds"]
                        log(f"  {learner} seed {s}: {raw['env_steps']} env steps in {raw['seconds']:.1f} s "
                            f"({record['env_steps_per_s']:.0f} env steps/s), "
                            f"{'converged' if raw['converged'] else 'budget spent'}, "
                            f"CE {record['curve'][-1]['ce']['mean']:.3f} (floor {floor.mean():.3f})")
                    runs.append(record)
            per.append({"target": target, "model": model, "entropy": floor})
    finally:
        if session is not None:
            session.__exit__(None, None, None)

    result = summarise(per, runs, ks, learners, budget, timing)
    result = {"probe": NAME, "checkpoint": str(checkpoint), "population": population, "seed": seed,
              "agents": agents, "episodes": episodes, "iterations": iterations, "train_batch_size": train_batch_size,
              "budget": budget, "worlds": worlds, "tolerance": tolerance, "learners": list(learners), "seeds": seeds,
              "ks": list(ks), **result, "seconds": round(time.perf_counter() - t0, 2)}
    write_outputs(result, out)
    return result


def _iterations(budget: int, batch: int, worlds: int) -> int:
    return math.ceil(budget / steps_per_iteration(batch, worlds))


def progress_total(personas: int, seeds: int, learners: Sequence[str], budget: int, batch: int, worlds: int) -> int:
    """The progress ticks of ``run``: one per persona's model curve and one per PPO iteration."""
    per_run = sum(math.ceil(budget / batch) if x == "rllib" else _iterations(budget, batch, worlds) for x in learners)
    return personas * (1 + seeds * per_run)


def summarise(per: list[dict], runs: list[dict], ks: Sequence[int], learners: Sequence[str], budget: int,
              timing: dict) -> dict:
    """The model's curve per persona and averaged, every run, each learner's mean curve, the ratio
    table and the summary figures."""
    model = []
    for p in per:
        name = p["target"].describe()
        for k in ks:
            m = p["model"][k]
            model.append({"persona": name, "K": int(k), "ce": mean_ci(m["model"]), "ce_bayes": mean_ci(m["bayes"]),
                          "ce_prior": mean_ci(m["prior"]), "entropy": mean_ci(m["entropy"]),
                          "kl": mean_ci(m["model"] - m["entropy"]), "kl_bayes": mean_ci(m["bayes"] - m["entropy"])})
    for k in ks:  # averaged over personas: the scenes pooled
        pool = {key: np.concatenate([p["model"][k][key] for p in per]) for key in ("model", "bayes", "prior", "entropy")}
        model.append({"persona": "mean", "K": int(k), "ce": mean_ci(pool["model"]), "ce_bayes": mean_ci(pool["bayes"]),
                      "ce_prior": mean_ci(pool["prior"]), "entropy": mean_ci(pool["entropy"]),
                      "kl": mean_ci(pool["model"] - pool["entropy"]), "kl_bayes": mean_ci(pool["bayes"] - pool["entropy"])})
    model_kl = {(m["persona"], m["K"]): m["kl"]["mean"] for m in model}

    curves = []
    for learner in learners:
        mine = [r for r in runs if r["learner"] == learner]
        grid = sorted({c["env_steps"] for r in mine for c in r["curve"]})
        for key in ("ce", "kl"):
            vals = np.stack([carried([c["env_steps"] for c in r["curve"]], [c[key]["mean"] for c in r["curve"]], grid)
                             for r in mine])  # (runs, points)
            for j, x in enumerate(grid):
                if key == "ce":
                    curves.append({"learner": learner, "env_steps": int(x), "ce": mean_ci(vals[:, j])})
                else:
                    curves[len(curves) - len(grid) + j]["kl"] = mean_ci(vals[:, j])

    ratios = []
    for learner in learners:
        mine = [r for r in runs if r["learner"] == learner]
        for k in [k for k in RATIO_KS if k in ks]:
            hits = [steps_to_reach([c["env_steps"] for c in r["curve"]], [c["kl"]["mean"] for c in r["curve"]],
                                   model_kl[(r["persona"], k)]) for r in mine]
            agg = aggregate([h[0] for h in hits], [h[1] for h in hits])
            ratios.append({"learner": learner, "K": int(k), "model_kl": model_kl[("mean", k)], "steps": agg,
                           "steps_per_K": None if agg["mean"] is None else agg["mean"] / k,
                           "per_run": [{"persona": r["persona"], "seed": r["seed"], "steps": h[0], "reached": h[1]}
                                       for r, h in zip(mine, hits, strict=True)]})

    throughput = {x: {**t, "env_steps_per_s": round(t["env_steps"] / t["seconds"], 1) if t["seconds"] else None,
                      "sampling_env_steps_per_s": round(t["env_steps"] / t["sample_seconds"], 1)
                      if t["sample_seconds"] else None} for x, t in timing.items()}
    kmax = max(ks)
    mean_model = {m["K"]: m for m in model if m["persona"] == "mean"}
    summary = {f"model_ce_at_K{kmax}": mean_model[kmax]["ce"]["mean"], "model_ce_at_K0": mean_model[min(ks)]["ce"]["mean"],
               f"model_kl_at_K{kmax}": mean_model[kmax]["kl"]["mean"],
               "entropy_floor": float(np.mean(np.concatenate([p["entropy"] for p in per]))), "uniform": LOG5, "budget": budget}
    for learner in learners:
        mine = [c for c in curves if c["learner"] == learner]
        summary[f"{learner}_ce_untrained"] = mine[0]["ce"]["mean"]
        summary[f"{learner}_ce_final"] = mine[-1]["ce"]["mean"]
        summary[f"{learner}_env_steps_final"] = mine[-1]["env_steps"]
        r = next((r for r in ratios if r["learner"] == learner and r["K"] == kmax), None)
        if r is not None:
            summary[f"{learner}_env_steps_to_model_K{kmax}"] = r["steps"]["mean"]
            summary[f"{learner}_reached_model_K{kmax}"] = f"{r['steps']['reached']}/{r['steps']['n']}"
    return {"personas": [{"describe": p["target"].describe(), **p["target"].to_json()} for p in per],
            "model": model, "runs": runs, "curves": curves, "ratios": ratios, "throughput": throughput,
            "summary": summary}
