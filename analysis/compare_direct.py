"""Direct optimisation vs generalisation + inference, measured: ``mirrorhall compare-direct``.

For each of a few trait personas pi_test (drawn, distinct, from the training split of the
population), two ways of coming to act like pi_test are scored by the same number: the exact
expected cross-entropy ``CE = -sum_a pi_test(a|s) log q(a|s)`` (nats) of the learner's action
distribution q against pi_test's, in held-out situations, as a function of environment steps.

(a) PPO, direct optimisation (``ImitationRewardEnv``). A fresh policy (RLlib PPO, one MLP over the
    flat observation, ``mirrorhall.imitation.ppo.ppo_config``) acts as agent 0 among scripted
    personas of the population; its reward for action a in its own situation s is
    ``log pi_test(a|s)``, computed exactly (``Cast`` / ``trait_probs`` on the learner's situation).
    Maximising E[log pi_test(a|s)] alone is solved by pi_test's most likely action, not by
    pi_test, so the learner adds the policy's own ``-log q_old(a|s)`` (the sampling
    distribution's log-probability, ``MaxEntPPOLearner``), and ``gamma = 0``: the per-step
    objective is then ``-KL(q || pi_test)``, maximised by q = pi_test exactly, and PPO's advantage
    standardisation does not move that optimum. Env steps: the learner's sampled steps (one
    learner per world, so agent steps = env steps). CE is evaluated after every PPO iteration.
(b) The shared model, generalisation + inference. It acts as agent 0 ("behave as yourself") in
    scenes of the population where agent k is pi_test; after K steps it is told
    "behave as agent k" and scored in agent 0's situation at step K (the ``imitate`` probe's
    measurement, ``ModelProbe.query``). Env steps: K, the steps of pi_test it watched; the model
    is never trained on pi_test and gets no reward. Beside it, the Bayes-optimal observer over
    the population's trait hypotheses with the same K steps (the ceiling of (b)), and the prior.

Held-out situations: for the model, agent 0's situation at step K of each scene (E scenes per
persona); for PPO, agent 0's situations at every step 0..max(K) of the same scenes, which PPO
never sees in training (its own worlds come from another seed stream). Intervals are 95%
bootstrap intervals over those situations; for PPO they do not cover the spread between training
runs (one seed per persona). The floor of any CE is pi_test's entropy (reported as
``entropy``); a uniform policy scores log 5 = 1.609.

Imports Ray and RLlib at module level: import this module explicitly.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mirrorhall.raykit import loopback_env

loopback_env()

import torch  # noqa: E402
from gymnasium import spaces  # noqa: E402
from gymnasium.utils import seeding  # noqa: E402
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner  # noqa: E402
from ray.rllib.connectors.connector_v2 import ConnectorV2  # noqa: E402
from ray.rllib.connectors.learner import GeneralAdvantageEstimation  # noqa: E402
from ray.rllib.core.columns import Columns  # noqa: E402
from ray.rllib.env.env_context import EnvContext  # noqa: E402

from mirrorhall import streams  # noqa: E402
from mirrorhall.agents.bayes import BayesObserver, HypothesisSet  # noqa: E402
from mirrorhall.agents.cast import Cast, sample_actions, trait_probs  # noqa: E402
from mirrorhall.agents.personas import Trait, persona_from_json  # noqa: E402
from mirrorhall.agents.populations import get_population  # noqa: E402
from mirrorhall.agents.scene import run_scene  # noqa: E402
from mirrorhall.analysis.common import (  # noqa: E402
    ModelProbe,
    Scene,
    cross_entropy,
    entropy,
    mean_ci,
)
from mirrorhall.envs.core import WorldConfig, WorldCore  # noqa: E402
from mirrorhall.envs.perception import situations  # noqa: E402
from mirrorhall.envs.rllib_env import WORLD_KEYS, MirrorhallMultiAgentEnv  # noqa: E402
from mirrorhall.imitation.checkpoint import load_policy  # noqa: E402

NAME = "compare_direct"
KS = (0, 1, 2, 5, 10, 20, 40)
LOG5 = math.log(5)

# --- (a) PPO on the reward log pi_test(a|s) ------------------------------------------------------

EXTRA_KEYS = ("target", "population", "learners", "split")


class ImitationRewardEnv(MirrorhallMultiAgentEnv):
    """The RLlib env where the learners (agents 0..L-1) are paid log pi_test(a|s).

    env_config: the world keys and ``seed`` of ``mirrorhall.envs.rllib_env``, plus
    ``target`` (pi_test's persona spec JSON, a trait persona), ``population`` (the other agents'
    personas, drawn afresh at every reset from the env's generator; default ``crowd``),
    ``split`` (``train``) and ``learners`` (1). Only the learners appear in RLlib's dicts; the
    other agents act inside the env. Each learner's reward is ``log pi_test(a|s)`` of its action a
    in its own situation s (exact); its info carries ``pi_test`` (the 5 probabilities).
    """

    def __init__(self, config: Mapping | None = None):
        config = config if config is not None else {}
        base = {k: v for k, v in dict(config).items() if k not in EXTRA_KEYS}
        if isinstance(config, EnvContext):
            base = EnvContext(base, worker_index=config.worker_index, vector_index=config.vector_index)
        super().__init__(base)
        if "target" not in config:
            raise ValueError("ImitationRewardEnv: env_config needs 'target' (pi_test's persona spec JSON)")
        target = config["target"]
        target = persona_from_json(json.loads(target) if isinstance(target, (str, bytes)) else dict(target))
        if not isinstance(target, Trait):
            raise ValueError(f"ImitationRewardEnv: target must be a trait persona, got {target!r}")
        self.target = target
        self.population = get_population(config.get("population", "crowd"))
        self.split = config.get("split", "train")
        n = self.config.n_agents
        self.n_learners = int(config.get("learners", 1))
        if not 1 <= self.n_learners <= n:
            raise ValueError(f"learners must be in 1..{n}, got {self.n_learners}")
        self.possible_agents = [f"agent_{i}" for i in range(self.n_learners)]
        self.agents = self.possible_agents[:]
        self._agent_ids = set(self.possible_agents)
        self.observation_spaces = {a: self.observation_spaces[a] for a in self.possible_agents}
        self.action_spaces = {a: self.action_spaces[a] for a in self.possible_agents}
        self.observation_space = spaces.Dict(self.observation_spaces)
        self.action_space = spaces.Dict(self.action_spaces)
        self.cast = None
        self.cast_state = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
        self.world_state = self.core.reset(1, self._np_random, self._valued[None])
        self._done = False
        n, c = self.config.n_agents, self.config.n_colors
        others = self.population.sample_scene(n, c, self._np_random, split=self.split)
        row = [self.target] * self.n_learners + list(others[self.n_learners:])
        self.cast = Cast([row], self.config)
        self.cast_state = self.cast.initial_state()
        self.agents = self.possible_agents[:]
        obs = self.core.observations(self.world_state)[0]
        return {a: obs[i] for i, a in enumerate(self.agents)}, {a: {} for a in self.agents}

    def step(self, action_dict: dict):
        if self._done:
            raise ValueError("step() called before reset() or after the episode ended; call reset()")
        sit = situations(self.core, self.world_state)
        probs = self.cast.probs(sit, self.cast_state)  # (1, N, 5): the learners' rows are pi_test
        act = sample_actions(probs, self._np_random)[0]  # the scripted agents' actions
        for i, agent in enumerate(self.agents):
            if agent not in action_dict:
                raise ValueError(f"no action for learner {agent}")
            act[i] = int(action_dict[agent])
        if act.min() < 0 or act.max() > 4:
            raise ValueError(f"actions must be integers in 0..4; got {action_dict!r}")
        self.core.step(self.world_state, act[None], self._np_random)
        self.cast_state = self.cast.observe(self.cast_state, sit, act[None])
        done = self.world_state.t >= self.config.max_cycles
        self._done = done
        obs = self.core.observations(self.world_state)[0]
        with np.errstate(divide="ignore"):
            logp = np.log(probs[0, np.arange(self.n_learners), act[: self.n_learners]])
        agents = self.agents
        rewards = {a: float(max(logp[i], -30.0)) for i, a in enumerate(agents)}
        terminateds = dict.fromkeys([*agents, "__all__"], False)
        truncateds = dict.fromkeys([*agents, "__all__"], done)
        infos = {a: {"pi_test": probs[0, i].tolist()} for i, a in enumerate(agents)}
        return {a: obs[i] for i, a in enumerate(agents)}, rewards, terminateds, truncateds, infos


class EntropyReward(ConnectorV2):
    """Learner connector: reward r - log q_old(a|s) on every real (not bootstrap) timestep.

    ``log q_old`` is the ``action_logp`` the EnvRunner recorded when it sampled a; with
    gamma = 0 the per-step objective becomes E_q[log pi_test - log q] = -KL(q || pi_test).
    """

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, **kwargs):
        for columns in batch.values():
            if not isinstance(columns, dict) or Columns.REWARDS not in columns or Columns.ACTION_LOGP not in columns:
                continue
            r, logp = columns[Columns.REWARDS], columns[Columns.ACTION_LOGP]
            mask = columns.get(Columns.LOSS_MASK)
            if isinstance(r, torch.Tensor):
                lp = torch.as_tensor(logp, dtype=r.dtype, device=r.device)
                m = torch.ones_like(r) if mask is None else torch.as_tensor(mask, device=r.device).to(r.dtype)
                columns[Columns.REWARDS] = r - lp * m
            else:
                m = 1.0 if mask is None else np.asarray(mask, dtype=np.float32)
                columns[Columns.REWARDS] = np.asarray(r) - np.asarray(logp) * m
        return batch


class MaxEntPPOLearner(PPOTorchLearner):
    """RLlib's PPO learner with ``EntropyReward`` inserted before the advantage estimation."""

    def build(self) -> None:
        super().build()
        if self._learner_connector is not None:
            self._learner_connector.insert_before(GeneralAdvantageEstimation, EntropyReward())


def imitation_ppo_config(world: WorldConfig, target: Trait, seed: int, population: str = "crowd",
                         train_batch_size: int = 1000, num_env_runners: int = 0, **ppo_kwargs):
    """A ``PPOConfig`` for one learner (agent 0) paid log pi_test(a|s), entropy-regularised."""
    from dataclasses import asdict

    from mirrorhall.imitation.ppo import ppo_config

    world_cfg = {k: v for k, v in asdict(world).items() if k in WORLD_KEYS}
    world_cfg["interior_walls"] = tuple(tuple(w) for w in world_cfg.get("interior_walls", ()))
    kwargs = {"gamma": 0.0, "entropy_coeff": 0.0, "minibatch_size": min(250, train_batch_size), **ppo_kwargs}
    config = ppo_config({**world_cfg, "seed": seed}, seed=seed, num_env_runners=num_env_runners,
                        train_batch_size=train_batch_size, **kwargs)
    env_config = {**world_cfg, "seed": seed, "target": json.dumps(target.to_json()), "population": population}
    return (config.environment(ImitationRewardEnv, env_config=env_config)
            .training(learner_class=MaxEntPPOLearner))


def policy_probs(module, obs: np.ndarray) -> np.ndarray:
    """(B, 5) action distributions of an RLlib PPO module for flat observations (B, D)."""
    with torch.no_grad():
        out = module.forward_inference({Columns.OBS: torch.from_numpy(np.asarray(obs, np.float32))})
        return torch.softmax(out[Columns.ACTION_DIST_INPUTS].double(), -1).numpy()


def train_ppo(world: WorldConfig, target: Trait, seed: int, iterations: int, eval_obs: np.ndarray,
              eval_truth: np.ndarray, population: str, train_batch_size: int = 1000,
              log=None) -> list[dict]:
    """PPO imitating ``target``: [{"iteration", "env_steps", "ce": per-situation CE array}] for
    iterations 0 (untrained) .. ``iterations``."""
    from mirrorhall.imitation.ppo import SHARED

    algo = imitation_ppo_config(world, target, seed, population, train_batch_size).build_algo()
    try:
        out = [{"iteration": 0, "env_steps": 0,
                "ce": cross_entropy(eval_truth, policy_probs(algo.get_module(SHARED), eval_obs))}]
        for it in range(1, iterations + 1):
            result = algo.train()
            steps = int(result["env_runners"]["num_env_steps_sampled_lifetime"])
            module = algo.learner_group._learner.module[SHARED] if algo.learner_group.is_local \
                else algo.get_module(SHARED)
            ce = cross_entropy(eval_truth, policy_probs(module, eval_obs))
            out.append({"iteration": it, "env_steps": steps, "ce": ce})
            if log:
                log(f"  PPO {target.describe()}: iteration {it}, {steps} env steps, CE {ce.mean():.3f}")
    finally:
        algo.stop()
    return out


# --- (b) the model after K steps of watching -----------------------------------------------------


def draw_personas(population: str, n_colors: int, count: int, rng) -> list[Trait]:
    """``count`` distinct trait personas (no follow) of the population's training split."""
    combos = [c for c in get_population(population).combos(n_colors, "train") if c[1] != "follow"]
    if count > len(combos):
        raise ValueError(f"--personas: at most {len(combos)} distinct trait personas in this population")
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
        log=print) -> dict:
    """Run both arms for ``personas`` personas; write DIR/compare_direct.{json,png,md}; return the JSON."""
    from mirrorhall.raykit import ray_session

    for name, value in (("personas", personas), ("episodes", episodes), ("agents", agents)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if agents < 2:
        raise ValueError("agents must be >= 2 (the model watches another agent)")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
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
            log("  model after K steps: " + ", ".join(f"K={k}: {model[k]['model'].mean():.3f}" for k in ks))
            eval_obs, eval_truth = held_out_set(scene, target)
            ppo = train_ppo(world, target, ppo_seeds[p], iterations, eval_obs, eval_truth, population,
                            train_batch_size, log=log)
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


def _json_default(x):
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))


def write_outputs(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    plot(result, out / f"{NAME}.png")
    (out / f"{NAME}.md").write_text(markdown(result))


def _series(result: dict, method: str, persona: str, key: str = "ce"):
    rows = sorted((c for c in result["conditions"] if c["method"] == method and c["persona"] == persona),
                  key=lambda c: c["env_steps"])
    x = np.array([c["env_steps"] for c in rows], dtype=float)
    m = np.array([np.nan if c[key]["mean"] is None else c[key]["mean"] for c in rows])
    lo = np.array([np.nan if c[key]["ci95"][0] is None else c[key]["ci95"][0] for c in rows])
    hi = np.array([np.nan if c[key]["ci95"][1] is None else c[key]["ci95"][1] for c in rows])
    return x, m, lo, hi


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["mean"] + [p["describe"] for p in result["personas"]]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for method, key, label, style in (("ppo", "ce", "PPO, reward log pi_test(a|s)", dict(color="C3", marker="o")),
                                          ("model", "ce", "model told 'behave as agent k'", dict(color="C0", marker="s")),
                                          ("model", "ce_bayes", "Bayes observer (same K steps)", dict(color="C2", ls="--"))):
            x, m, lo, hi = _series(result, method, name, key)
            ax.plot(x, m, label=label, ms=3, **style)
            ax.fill_between(x, lo, hi, color=style["color"], alpha=0.15)
        _, ent, _, _ = _series(result, "ppo", name, "entropy")
        ax.axhline(ent[0], color="k", ls=":", lw=1, label="entropy of pi_test (floor)")
        ax.axhline(LOG5, color="0.6", lw=1, label="uniform (log 5)")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        ax.set_xlabel("environment steps (PPO: sampled; model: steps of pi_test watched)")
        ax.set_ylabel("cross-entropy vs pi_test (nats)")
        ax.set_title("averaged over personas" if name == "mean" else name, fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Direct optimisation (PPO) vs generalisation + inference (shared model)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(c: dict) -> str:
    if c["mean"] is None:
        return "-"
    lo, hi = c["ci95"]
    return f"{c['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = [
        "# Direct optimisation vs generalisation + inference",
        "",
        f"Checkpoint `{result['checkpoint']}`, population `{result['population']}`, seed {result['seed']}, "
        f"{len(result['personas'])} trait personas pi_test, {result['episodes']} scenes each, "
        f"{result['iterations']} PPO iterations of {result['train_batch_size']} env steps; {result['seconds']} s.",
        "",
        "Cross-entropy (nats) against pi_test in held-out situations, mean [95% CI], averaged over personas.",
        f"Floor (entropy of pi_test): {s['entropy_floor']:.3f}; uniform: {LOG5:.3f}.",
        "",
        "| method | env steps | cross-entropy |",
        "|---|---:|---|",
    ]
    for c in result["conditions"]:
        if c["persona"] != "mean":
            continue
        label = ("PPO, reward log pi_test" if c["method"] == "ppo" else "model, K steps watched")
        lines.append(f"| {label} | {c['env_steps']} | {_fmt(c['ce'])} |")
    lines += ["", "Bayes observer with the same K steps (ceiling of the model):", "",
              "| K | Bayes | prior |", "|---:|---|---|"]
    for c in result["conditions"]:
        if c["persona"] == "mean" and c["method"] == "model":
            lines.append(f"| {c['env_steps']} | {_fmt(c['ce_bayes'])} | {_fmt(c['ce_prior'])} |")
    lines += ["", "Per persona (PPO at its final budget vs the model at the largest K):", "",
              "| persona | PPO final (env steps) | model, K = max |", "|---|---|---|"]
    kmax = max(result["ks"])
    for p in result["personas"]:
        ppo = [c for c in result["conditions"] if c["method"] == "ppo" and c["persona"] == p["describe"]][-1]
        mod = [c for c in result["conditions"] if c["method"] == "model" and c["persona"] == p["describe"]
               and c["env_steps"] == kmax][0]
        lines.append(f"| {p['describe']} | {_fmt(ppo['ce'])} ({ppo['env_steps']}) | {_fmt(mod['ce'])} |")
    match = s[f"ppo_env_steps_to_match_model_K{kmax}"]
    lines += ["", f"PPO reached the model's K={kmax} cross-entropy after: "
              + (f"{match} env steps." if match is not None else "not within this budget.")]
    return "\n".join(lines) + "\n"
