"""``compare-direct`` itself: the model's arm (scenes where it watches pi_test, its cross-entropy
curve beside Bayes and the prior), the held-out situations both arms are scored in, and ``run``,
which runs both arms per persona and writes the outputs (see the package docstring)."""

from __future__ import annotations

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
from mirrorhall.analysis.compare_direct.learner import train_ppo
from mirrorhall.analysis.compare_direct.report import LOG5, NAME, write_outputs
from mirrorhall.envs.core import WorldConfig, WorldCore
from mirrorhall.errors import ConfigError
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


def run(checkpoint, out, seed: int = 0, personas: int = 4, iterations: int = 10, episodes: int = 8,
        agents: int = 8, population: str | None = None, train_batch_size: int = 1000, ks: Sequence[int] = KS,
        log=print, progress: Callable[[], None] | None = None) -> dict:
    """Run both arms for ``personas`` personas; write DIR/compare_direct.{json,png,md}; return the JSON.

    ``progress()`` is called once per persona when the model's curve is measured and once per PPO
    iteration: ``personas * (iterations + 1)`` calls in all."""
    from mirrorhall.raykit import ray_session

    for name, value in (("personas", personas), ("episodes", episodes), ("agents", agents)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if agents < 2:
        raise ConfigError("agents must be >= 2 (the model watches another agent)")
    if iterations < 0:
        raise ConfigError(f"iterations must be >= 0, got {iterations}")
    t0 = time.perf_counter()
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

    per = []
    with ray_session(num_cpus=2):
        for p, target in enumerate(targets):
            log(f"persona {p + 1}/{personas}: {target.describe()}")
            scene, ks_target = model_scenes(probe, world, target, population, episodes, steps, scene_seed + p, rng)
            model = model_curve(probe, scene, ks_target, target, hyp, ks)
            if progress:
                progress()
            log("  model after K steps: " + ", ".join(f"K={k}: {model[k]['model'].mean():.3f}" for k in ks))
            eval_obs, eval_truth = held_out_set(scene, target)
            ppo = train_ppo(world, target, ppo_seeds[p], iterations, eval_obs, eval_truth, population,
                            train_batch_size, log=log, on_iteration=progress)
            per.append({"target": target, "model": model, "ppo": ppo, "entropy": entropy(eval_truth)})

    result = summarise(per, ks, iterations)
    result = {"probe": NAME, "checkpoint": str(checkpoint), "population": population, "seed": seed,
              "agents": agents, "episodes": episodes, "iterations": iterations,
              "train_batch_size": train_batch_size, "ks": list(ks), **result,
              "seconds": round(time.perf_counter() - t0, 2)}
    write_outputs(result, Path(out))
    return result


def summarise(per: list[dict], ks: Sequence[int], iterations: int) -> dict:
    conditions = []
    for p in per:
        name = p["target"].describe()
        for k in ks:
            m = p["model"][k]
            conditions.append({"method": "model", "persona": name, "env_steps": int(k),
                               "ce": mean_ci(m["model"]), "ce_bayes": mean_ci(m["bayes"]),
                               "ce_prior": mean_ci(m["prior"]), "entropy": mean_ci(m["entropy"])})
        for r in p["ppo"]:
            conditions.append({"method": "ppo", "persona": name, "iteration": r["iteration"],
                               "env_steps": r["env_steps"], "ce": mean_ci(r["ce"]), "entropy": mean_ci(p["entropy"])})
    # averaged over personas: samples pooled, env steps averaged per iteration
    for k in ks:
        pool = {key: np.concatenate([p["model"][k][key] for p in per]) for key in ("model", "bayes", "prior", "entropy")}
        conditions.append({"method": "model", "persona": "mean", "env_steps": int(k), "ce": mean_ci(pool["model"]),
                           "ce_bayes": mean_ci(pool["bayes"]), "ce_prior": mean_ci(pool["prior"]),
                           "entropy": mean_ci(pool["entropy"])})
    for it in range(iterations + 1):
        conditions.append({"method": "ppo", "persona": "mean", "iteration": it,
                           "env_steps": int(round(np.mean([p["ppo"][it]["env_steps"] for p in per]))),
                           "ce": mean_ci(np.concatenate([p["ppo"][it]["ce"] for p in per])),
                           "entropy": mean_ci(np.concatenate([p["entropy"] for p in per]))})
    mean_model = {c["env_steps"]: c["ce"]["mean"] for c in conditions if c["method"] == "model" and c["persona"] == "mean"}
    mean_ppo = [c for c in conditions if c["method"] == "ppo" and c["persona"] == "mean"]
    k_best = max(ks)
    beaten = [c["env_steps"] for c in mean_ppo if c["ce"]["mean"] <= mean_model[k_best]]
    return {
        "personas": [{"describe": p["target"].describe(), **p["target"].to_json()} for p in per],
        "conditions": conditions,
        "summary": {
            f"model_ce_at_K{k_best}": mean_model[k_best],
            "model_ce_at_K0": mean_model[min(ks)],
            "ppo_ce_untrained": mean_ppo[0]["ce"]["mean"],
            "ppo_ce_final": mean_ppo[-1]["ce"]["mean"],
            "ppo_env_steps_final": mean_ppo[-1]["env_steps"],
            f"ppo_env_steps_to_match_model_K{k_best}": beaten[0] if beaten else None,
            "entropy_floor": mean_ppo[0]["entropy"]["mean"],
            "uniform": LOG5,
        },
    }
