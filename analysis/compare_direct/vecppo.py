"""PPO on log pi_test(a|s) in vectorised worlds, for two learners that differ only in what they read.

``ImitationWorlds`` is ``ImitationRewardEnv`` for B worlds at once on the batched core (numpy, no
Ray): agent 0 of every world is the learner, the other agents are the population's scripted
personas (drawn afresh per world and episode), and the learner is paid log pi_test(a|s) of its
action a in its own situation s, exactly. All worlds start and end their episodes together.

Two learners (``LEARNERS``), the same PPO loop (``train_run``):

``flat`` ("from pixels")
    an MLP over the flat observation (771 numbers in the default world), as RLlib's default
    PPO module builds it: ``hidden`` tanh layers for the policy, a separate value MLP.
``relational`` (the model's inputs)
    the ego's own per-action relational features, read from the learner's observation through
    the one perception path (``perception.decode`` then ``perception.view_features``, the ego's
    row; ``relational_inputs``), and a head of the shared model's form
    (``imitation/model.py``): each action's logit is a utility linear in the action's features
    with weights read from z, plus a per-action bias read from z, plus an MLP over [z, the
    action's features and their difference from the mean over actions, the action's identity].
    With no prompt, z is a learned vector. The value is an MLP over the (5 x F) features.

The PPO loop: gamma = 0 and the reward r - log q_old(a|s) (the max-entropy term of
``learner.EntropyReward``), so the per-step objective is -KL(q || pi_test), maximised by
q = pi_test; advantages r - log q_old - V(s), standardised per minibatch; clipped surrogate,
squared-error value loss, Adam. Actions are sampled with ``cast.sample_actions`` from the run's
own generator; torch's initialisation runs under a forked, seeded torch generator, so a run is
a function of its seed.

Evaluation: after log-spaced iterations (``eval_iterations``) the policy's exact cross-entropy
against pi_test on a held-out set of observations; the run stops when its mean excess over
pi_test's entropy (its KL) is at most ``tolerance`` or when the env-step budget is spent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from mirrorhall.agents.cast import Cast, sample_actions
from mirrorhall.agents.personas import Trait
from mirrorhall.agents.populations import get_population
from mirrorhall.analysis.common import cross_entropy, entropy
from mirrorhall.envs.core import N_ACTIONS, WorldConfig, WorldCore
from mirrorhall.envs.perception import decode, n_features, situations, view_features

LEARNERS = ("flat", "relational")
"""The vectorised PPO learners (``rllib``, the RLlib flat learner, is run by ``learner.train_ppo``)."""


# --- the worlds --------------------------------------------------------------------------------


class ImitationWorlds:
    """B worlds where agent 0 is the learner, paid log pi_test(a|s) exactly (see the module docstring)."""

    def __init__(self, world: WorldConfig, target: Trait, population: str, n_worlds: int,
                 rng: np.random.Generator, split: str = "train"):
        if n_worlds < 1:
            raise ValueError(f"n_worlds must be >= 1, got {n_worlds}")
        self.config = world
        self.core = WorldCore(world)
        self.target = target
        self.population = get_population(population)
        self.split = split
        self.n_worlds = n_worlds
        self.rng = rng
        self.state = None
        self.cast = None
        self.cast_state = None

    def reset(self) -> np.ndarray:
        """New episodes in every world: (B, obs_dim) the learners' observations."""
        cfg = self.config
        self.state = self.core.reset(self.n_worlds, self.rng)
        rows = [[self.target, *self.population.sample_scene(cfg.n_agents, cfg.n_colors, self.rng, self.split)[1:]]
                for _ in range(self.n_worlds)]
        self.cast = Cast(rows, cfg)
        self.cast_state = self.cast.initial_state()
        return self.core.observations(self.state)[:, 0]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The learners' actions (B,) -> (observations (B, obs_dim), rewards (B,), pi_test (B, 5)).

        The rewards are log pi_test(a|s) (at least -30) in the situation the action was taken
        in; at the end of an episode the observations are the first of the next one."""
        sit = situations(self.core, self.state)
        probs = self.cast.probs(sit, self.cast_state)  # (B, N, 5): row 0 is pi_test in the learner's situation
        act = sample_actions(probs, self.rng)  # (B, N)
        act[:, 0] = actions
        self.core.step(self.state, act, self.rng)
        self.cast_state = self.cast.observe(self.cast_state, sit, act)
        pi_test = probs[:, 0]  # (B, 5)
        with np.errstate(divide="ignore"):
            reward = np.maximum(np.log(pi_test[np.arange(self.n_worlds), actions]), -30.0)
        if int(np.max(self.state.t)) >= self.config.max_cycles:
            return self.reset(), reward, pi_test
        return self.core.observations(self.state)[:, 0], reward, pi_test


# --- the learners --------------------------------------------------------------------------------


def relational_inputs(obs: np.ndarray, core: WorldCore) -> np.ndarray:
    """(B, obs_dim) observations -> (B, 5, F) float32: each observer's own row of the relational
    features, through the one perception path (``decode``, ``view_features``)."""
    view = decode(obs, core.config)
    feats, _ = view_features(core, view)  # (B, N, 5, F)
    return feats[np.arange(feats.shape[0]), view.ego]


def _mlp(d_in: int, hidden, d_out: int, act=nn.Tanh) -> nn.Sequential:
    layers, d = [], d_in
    for h in hidden:
        layers += [nn.Linear(d, h), act()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, d_out))


class FlatPolicy(nn.Module):
    """"From pixels": a tanh MLP over the flat observation, and a separate value MLP."""

    name = "flat"

    def __init__(self, world: WorldConfig, hidden=(64, 64)):
        super().__init__()
        self.policy = _mlp(world.obs_dim, hidden, N_ACTIONS)
        self.value = _mlp(world.obs_dim, hidden, 1)

    @staticmethod
    def inputs(obs: np.ndarray, core: WorldCore) -> np.ndarray:
        return np.asarray(obs, dtype=np.float32)  # (B, obs_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy(x), self.value(x).squeeze(-1)  # (B, 5), (B,)


class RelationalPolicy(nn.Module):
    """The model's inputs and head form: per-action features (B, 5, F) -> logits (B, 5).

    ``utility`` and ``action_bias`` read the learned z as the model's read its policy vector;
    ``head`` is the MLP over [z, features, features - their mean over actions, action identity]."""

    name = "relational"

    def __init__(self, world: WorldConfig, d_z: int = 32, d_hidden: int = 64, hidden=(64, 64)):
        super().__init__()
        f = n_features(world.n_colors)
        self.z = nn.Parameter(0.1 * torch.randn(d_z))
        self.utility = nn.Linear(d_z, f)
        self.action_bias = nn.Linear(d_z, N_ACTIONS)
        self.head = _mlp(d_z + 2 * f + N_ACTIONS, (d_hidden, d_hidden), 1, act=nn.GELU)
        self.value = _mlp(N_ACTIONS * f, hidden, 1)

    @staticmethod
    def inputs(obs: np.ndarray, core: WorldCore) -> np.ndarray:
        return relational_inputs(obs, core)  # (B, 5, F)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        z = self.z.expand(b, -1)  # (B, d_z)
        ids = torch.eye(N_ACTIONS, dtype=x.dtype).expand(b, -1, -1)  # (B, 5, 5)
        view = torch.cat([x, x - x.mean(-2, keepdim=True)], dim=-1)  # (B, 5, 2F)
        h = torch.cat([z[:, None].expand(-1, N_ACTIONS, -1), view, ids], dim=-1)
        utility = (x * self.utility(z)[:, None]).sum(-1)  # (B, 5)
        logits = self.head(h).squeeze(-1) + utility + self.action_bias(z)
        return logits, self.value(x.flatten(1)).squeeze(-1)


POLICIES = {"flat": FlatPolicy, "relational": RelationalPolicy}


# --- the loop ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PPOSettings:
    """PPO's settings (the RLlib arm's, ``ppo.ppo_config``, where they have one)."""

    lr: float = 1e-3
    epochs: int = 6
    """Passes over each iteration's batch."""
    minibatch: int = 256
    """Env steps per gradient step (at most the batch)."""
    clip: float = 0.2
    vf_coeff: float = 0.5
    max_grad_norm: float = 0.5


def steps_per_iteration(batch: int, worlds: int) -> int:
    """Env steps of one PPO iteration: ``worlds`` worlds x ceil(batch / worlds) steps each."""
    return worlds * math.ceil(batch / worlds)


def eval_iterations(iterations: int, per_decade: int = 6) -> list[int]:
    """0, then log-spaced iterations 1..``iterations`` (about ``per_decade`` per decade), ending at
    ``iterations``."""
    if iterations < 1:
        return [0]
    n = max(2, int(math.ceil(per_decade * math.log10(iterations))) + 1)
    its = np.unique(np.ceil(np.geomspace(1, iterations, n)).astype(int))
    return [0, *sorted(set(its.tolist()) | {iterations})]


def evaluate(policy: nn.Module, eval_x: torch.Tensor, eval_truth: np.ndarray) -> np.ndarray:
    """(S,) exact cross-entropy of the policy against pi_test on the held-out inputs."""
    with torch.no_grad():
        logits, _ = policy(eval_x)
        q = torch.softmax(logits.double(), -1).numpy()
    return cross_entropy(eval_truth, q)


def train_run(learner: str, world: WorldConfig, target: Trait, population: str, eval_obs: np.ndarray,
              eval_truth: np.ndarray, seed: np.random.SeedSequence, budget: int, batch: int = 1000,
              worlds: int = 8, tolerance: float = 0.02, settings: PPOSettings = PPOSettings(),
              log=None, on_iteration: Callable[[int], None] | None = None) -> dict:
    """One PPO run: ``{"curve": [{"iteration", "env_steps", "ce", "kl", "seconds"}], "converged",
    "env_steps", "seconds", "sample_seconds", "policy"}``; ``ce``/``kl`` are per held-out situation
    (arrays). ``on_iteration(n)`` counts iterations: called with 1 after each, and with the
    remaining ones at once when the run converges early, ceil(budget / steps per iteration) in all."""
    if learner not in POLICIES:
        raise ValueError(f"unknown learner {learner!r}; choose from {sorted(POLICIES)}")
    world_seed, action_seed, torch_seed = seed.spawn(3)
    env = ImitationWorlds(world, target, population, worlds, np.random.default_rng(world_seed))
    act_rng = np.random.default_rng(action_seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch_seed.generate_state(1)[0]))
        policy = POLICIES[learner](world)
    opt = torch.optim.Adam(policy.parameters(), lr=settings.lr)
    core = env.core
    per_iter = steps_per_iteration(batch, worlds)
    horizon = per_iter // worlds
    iterations = max(0, math.ceil(budget / per_iter))
    evals = set(eval_iterations(iterations))
    eval_x = torch.from_numpy(policy.inputs(eval_obs, core))
    floor = entropy(eval_truth)  # (S,)
    t0 = time.perf_counter()
    sample_s = 0.0
    curve = []

    def record(it: int) -> float:
        ce = evaluate(policy, eval_x, eval_truth)
        curve.append({"iteration": it, "env_steps": it * per_iter, "ce": ce, "kl": ce - floor,
                      "seconds": round(time.perf_counter() - t0, 3)})
        return float((ce - floor).mean())

    kl = record(0)
    converged = kl <= tolerance
    obs = env.reset()
    it = 0
    while it < iterations and not converged:
        ts = time.perf_counter()
        xs, acts, logq, rews = [], [], [], []
        for _ in range(horizon):
            x = policy.inputs(obs, core)
            with torch.no_grad():
                logits, _ = policy(torch.from_numpy(x))
                logp = torch.log_softmax(logits.double(), -1).numpy()  # (B, 5)
            a = sample_actions(np.exp(logp), act_rng)
            obs, r, _ = env.step(a)
            xs.append(x)
            acts.append(a)
            logq.append(logp[np.arange(worlds), a])
            rews.append(r)
        sample_s += time.perf_counter() - ts
        x = torch.from_numpy(np.concatenate(xs))
        a = torch.from_numpy(np.concatenate(acts))
        old = torch.from_numpy(np.concatenate(logq)).float()
        ret = torch.from_numpy(np.concatenate(rews)).float() - old  # gamma = 0: the return is one step
        n = x.shape[0]
        mb = min(settings.minibatch, n)
        for _ in range(settings.epochs):
            perm = torch.from_numpy(act_rng.permutation(n))
            for i in range(0, n - mb + 1, mb):
                idx = perm[i: i + mb]
                logits, v = policy(x[idx])
                new = torch.log_softmax(logits, -1).gather(1, a[idx, None]).squeeze(1)
                adv = ret[idx] - v.detach()
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                ratio = torch.exp(new - old[idx])
                pg = -torch.min(ratio * adv, ratio.clamp(1 - settings.clip, 1 + settings.clip) * adv).mean()
                loss = pg + settings.vf_coeff * ((v - ret[idx]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(policy.parameters(), settings.max_grad_norm)
                opt.step()
        it += 1
        if it in evals:
            kl = record(it)
            converged = kl <= tolerance
            if log:
                log(f"  {learner} PPO {target.describe()}: {it * per_iter} env steps, "
                    f"CE {curve[-1]['ce'].mean():.3f}, KL {kl:.3f}")
        if on_iteration:
            on_iteration(1)
    if on_iteration and it < iterations:  # converged early: the iterations it did not need
        on_iteration(iterations - it)
    if curve[-1]["iteration"] != it:
        record(it)
    seconds = time.perf_counter() - t0
    return {"learner": learner, "curve": curve, "converged": bool(converged), "env_steps": it * per_iter,
            "iterations": it, "seconds": round(seconds, 3), "sample_seconds": round(sample_s, 3),
            "settings": asdict(settings), "policy": policy}
