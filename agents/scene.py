"""Run scenes of scripted personas on the batched core and record every step.

``run_scene`` is the one loop that drives a cast through B worlds: situations, exact
probabilities, sampled actions, the world step, the imitators' belief updates. The recorded
``Episode`` is what the CLI summarises, the dataset labels and the tests compare byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.bayes import HypothesisSet
from mirrorhall.agents.cast import IMITATOR, Cast, CastState, sample_actions
from mirrorhall.agents.personas import PersonaSpec, Trait
from mirrorhall.envs.core import WorldConfig, WorldCore, WorldState


@dataclass
class Episode:
    """Recorded trajectories of B worlds for T steps."""

    config: WorldConfig
    personas: tuple[tuple[PersonaSpec, ...], ...]  # (B, N)
    seed: int
    agent_pos: np.ndarray  # (T + 1, B, N, 2)
    gem_pos: np.ndarray  # (T + 1, B, G, 2)
    actions: np.ndarray  # (T, B, N)
    probs: np.ndarray  # (T, B, N, 5) exact distribution each action was drawn from
    rewards: np.ndarray  # (T, B, N)
    collected: np.ndarray  # (B, N, C) gems collected by colour
    match: np.ndarray  # (T, B, N) imitators: overlap sum_a min(p, q) with the target's q; nan else
    belief_on_target: np.ndarray  # (B, N) imitators of trait agents: final posterior mass on the truth

    @property
    def steps(self) -> int:
        return self.actions.shape[0]

    def digest(self) -> str:
        """sha256 over every recorded array: equal digests mean byte-identical trajectories."""
        h = hashlib.sha256()
        for arr in (self.agent_pos, self.gem_pos, self.actions, self.probs, self.rewards,
                    self.collected, self.match, self.belief_on_target):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def seeded_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(world generator, policy generator) derived from one seed."""
    return streams.rng(streams.SCENE_WORLD, seed), streams.rng(streams.SCENE_POLICY, seed)


def run_scene(config: WorldConfig, personas: Sequence[PersonaSpec] | Sequence[Sequence[PersonaSpec]],
              steps: int, seed: int, hypotheses: HypothesisSet | None = None, valued=None,
              on_step: Callable[[int, WorldState, CastState], None] | None = None,
              model=None, prompts: str | Sequence[str] = "behave as yourself",
              prompt_schedule: dict[int, dict[int, str]] | None = None) -> Episode:
    """Run ``steps`` steps of one world (a row of N specs) or B worlds (B rows) from ``seed``.

    ``model`` (a ``ModelPolicy``) drives its agents instead of their specs, starting from
    ``prompts``; ``prompt_schedule`` {step: {agent: text}} changes prompts before that step.
    """
    rows = [list(personas)] if personas and not isinstance(personas[0], (list, tuple)) else \
        [list(r) for r in personas]
    cast = Cast(rows, config, hypotheses)
    core = WorldCore(config)
    world_rng, policy_rng = seeded_generators(seed)
    state = core.reset(len(rows), world_rng, valued)
    cstate = cast.initial_state()
    b, n = state.last_action.shape
    imit = cast.params.kind == IMITATOR  # (B, N)
    target = np.where(imit, cast.params.target, np.arange(n))  # (B, N)

    mstate = model.initial_state(b, prompts) if model is not None else None
    if model is not None:  # an imitator of a model-driven agent has no scripted target to compare with
        imit_scored = imit & ~np.isin(cast.params.target, model.agents)
    else:
        imit_scored = imit
    schedule = prompt_schedule or {}
    agent_pos, gem_pos = [state.agent_pos.copy()], [state.gem_pos.copy()]
    actions, probs, rewards, match = [], [], [], []
    if on_step is not None:
        on_step(0, state, cstate)
    for _ in range(steps):
        sit = core.situations(state)
        p = cast.probs(sit, cstate)  # (B, N, 5)
        q = cast.probs_as(target, sit, cstate)  # (B, N, 5) the target's choice in my situation
        if model is not None:
            for agent, text in schedule.get(state.t, {}).items():
                mstate = model.set_prompt(mstate, agent, text)
            feats, vis = model.features(state)
            p[:, model.agents] = model.probs(mstate, feats, vis)
        a = sample_actions(p, policy_rng)
        if model is not None:
            mstate = model.observe(mstate, feats, vis, a)
        r = core.step(state, a, world_rng)
        cstate = cast.observe(cstate, sit, a)
        agent_pos.append(state.agent_pos.copy())
        gem_pos.append(state.gem_pos.copy())
        actions.append(a)
        probs.append(p)
        rewards.append(r)
        match.append(np.where(imit_scored, np.minimum(p, q).sum(-1), np.nan))
        if on_step is not None:
            on_step(state.t, state, cstate)

    return Episode(
        config=config,
        personas=tuple(tuple(r) for r in rows),
        seed=seed,
        agent_pos=np.stack(agent_pos),
        gem_pos=np.stack(gem_pos),
        actions=np.stack(actions) if actions else np.zeros((0, b, n), np.int64),
        probs=np.stack(probs) if probs else np.zeros((0, b, n, 5)),
        rewards=np.stack(rewards) if rewards else np.zeros((0, b, n), np.float32),
        collected=state.collected.copy(),
        match=np.stack(match) if match else np.zeros((0, b, n)),
        belief_on_target=_belief_on_target(cast, cstate, imit),
    )


def _belief_on_target(cast: Cast, cstate: CastState, imit: np.ndarray) -> np.ndarray:
    """(B, N) posterior mass each imitator puts on its target's true trait persona."""
    out = np.full(imit.shape, np.nan)
    hyp = cast.hypotheses
    for w, m in zip(*np.nonzero(imit), strict=True):
        truth = cast.specs[w][cast.params.target[w, m]]
        if isinstance(truth, Trait) and truth in hyp.traits:
            lb = cstate.log_belief[w, m]
            post = np.exp(lb - lb.max())
            out[w, m] = post[hyp.index(truth)] / post.sum()
    return out
