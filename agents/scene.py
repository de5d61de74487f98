"""Run scenes of scripted personas on the batched core and record every step.

``run_scene`` is the one loop that drives a cast through B worlds: situations, exact
probabilities (a ``Driver``'s for the agents it acts for), sampled actions, the world step, the
imitators' belief updates. ``gains_after`` replays a scene with it and then continues the worlds
from a chosen step with the same steps (no drivers, events or records), many times over. The recorded ``Episode`` is what the CLI summarises and the tests
compare byte for byte; the dataset labels each step through the ``on_act`` hook
(``imitation/labels.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.bayes import HypothesisSet
from mirrorhall.agents.cast import IMITATOR, Cast, CastState, sample_actions
from mirrorhall.agents.personas import PersonaSpec, Trait
from mirrorhall.envs.core import (
    N_ACTIONS,
    WorldConfig,
    WorldCore,
    WorldEvent,
    WorldState,
    check_events,
)
from mirrorhall.envs.perception import Situations, situations


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
    events: tuple[tuple[WorldEvent, ...], ...] = ()  # (B,) each world's schedule of interventions; () none

    @property
    def steps(self) -> int:
        return self.actions.shape[0]

    def digest(self) -> str:
        """sha256 over every recorded array: equal digests mean byte-identical trajectories."""
        h = hashlib.sha256()
        for arr in (self.agent_pos, self.gem_pos, self.actions, self.probs, self.rewards,
                    self.collected, self.match, self.belief_on_target):
            h.update(np.ascontiguousarray(arr).tobytes())
        if any(self.events):  # episodes without events keep the digests they always had
            h.update(repr([[e.to_json() for e in row] for row in self.events]).encode())
        return h.hexdigest()


@dataclass(frozen=True)
class SceneStep:
    """One step of ``run_scene`` as the ``on_act`` hook sees it: the actions are drawn, the world
    has not moved yet. Arrays belong to the loop: copy what you keep."""

    t: int
    state: WorldState  # the worlds before the step (the step then changes it in place)
    situations: Situations  # (B, N) in which the actions were chosen
    cast: Cast
    cast_state: CastState  # the imitators' beliefs before they see these actions
    probs: np.ndarray  # (B, N, 5) the exact distributions the actions were drawn from
    actions: np.ndarray  # (B, N)


class Driver(Protocol):
    """Acts for some agents of a scene in place of their scripted personas (the trained model's
    ``ModelDriver`` is one). Its state is explicit, as a persona's is."""

    agents: np.ndarray  # (M,) the agent ids it acts for

    def initial_state(self, batch_size: int): ...

    def act(self, world: WorldState, state) -> tuple[np.ndarray, object]:
        """(B, M, 5) its agents' action distributions at step ``world.t``, and its next state."""

    def observe(self, state, actions: np.ndarray):
        """Its state after every agent's actions (B, N) of the step just acted."""


def seeded_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(world generator, policy generator) derived from one seed."""
    return streams.rng(streams.SCENE_WORLD, seed), streams.rng(streams.SCENE_POLICY, seed)


def run_scene(config: WorldConfig, personas: Sequence[PersonaSpec] | Sequence[Sequence[PersonaSpec]],
              steps: int, seed: int, hypotheses: HypothesisSet | None = None, valued=None,
              on_step: Callable[[int, WorldState, CastState], None] | None = None,
              drivers: Sequence[Driver] = (),
              on_act: Callable[[SceneStep], None] | None = None,
              generators: tuple[np.random.Generator, np.random.Generator] | None = None,
              events=None, place: Callable[[WorldState], None] | None = None,
              remember: bool = False) -> Episode:
    """Run ``steps`` steps of one world (a row of N specs) or B worlds (B rows) from ``seed``.

    ``on_step(t, state, cast_state)`` is called at t = 0 and after every step; ``on_act`` is
    called at every step between drawing the actions and moving the world. ``generators``
    (world, policy) replace the streams derived from ``seed``, which is then only recorded.
    Each of ``drivers`` (for instance the trained model, ``ModelPolicy.driver(prompts)``) acts for
    its agents instead of their specs: its probabilities replace theirs at every step.
    ``events``: interventions (``WorldEvent`` or their JSON), one schedule for every world or a
    list of B schedules (one per world); each happens when its world reaches its step, before
    anything observes that step, and the episode records them. ``place(state)`` may rearrange
    the worlds right after reset (a probe's chosen layout), before the events of step 0.
    ``remember``: track every agent's memory of the gems even without believers in the cast
    (labels that describe a believer in any agent's situation need it).
    """
    rows = [list(personas)] if personas and not isinstance(personas[0], (list, tuple)) else \
        [list(r) for r in personas]
    cast = Cast(rows, config, hypotheses, remember_all=remember)
    core = WorldCore(config)
    world_rng, policy_rng = seeded_generators(seed)
    if generators is not None:
        world_rng, policy_rng = generators
    state = core.reset(len(rows), world_rng, valued)
    schedules = _schedules(events, config, len(rows))
    if place is not None:
        place(state)
    _intervene(core, state, schedules)
    cstate = cast.initial_state()
    b, n = state.last_action.shape
    imit = cast.params.kind == IMITATOR  # (B, N)
    target = np.where(imit, cast.params.target, np.arange(n))  # (B, N)

    dstates = [d.initial_state(b) for d in drivers]
    driven = np.concatenate([np.asarray(d.agents, dtype=np.int64) for d in drivers]) if drivers else np.zeros(0, np.int64)
    if driven.size != np.unique(driven).size:
        raise ValueError("an agent is driven by more than one driver")
    # an imitator of a driven agent has no scripted target to compare with
    imit_scored = imit & ~np.isin(cast.params.target, driven)
    agent_pos, gem_pos = [state.agent_pos.copy()], [state.gem_pos.copy()]
    actions, probs, rewards, match = [], [], [], []
    if on_step is not None:
        on_step(0, state, cstate)
    for _ in range(steps):
        cstate = cast.perceive(cstate, core, state)  # agents that remember take in what they see
        sit = situations(core, state)
        p = cast.probs(sit, cstate)  # (B, N, 5)
        q = cast.probs_as(target, sit, cstate)  # (B, N, 5) the target's choice in my situation
        for k, d in enumerate(drivers):
            p[:, d.agents], dstates[k] = d.act(state, dstates[k])
        a = sample_actions(p, policy_rng)
        dstates = [d.observe(ds, a) for d, ds in zip(drivers, dstates, strict=True)]
        if on_act is not None:
            on_act(SceneStep(state.t, state, sit, cast, cstate, p, a))
        r = core.step(state, a, world_rng)
        _intervene(core, state, schedules)
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
        events=tuple(schedules) if any(schedules) else (),
    )


def _schedules(events, config: WorldConfig, b: int) -> list[tuple[WorldEvent, ...]]:
    """B checked schedules from ``run_scene``'s ``events`` (None, one schedule, or one per world)."""
    if events is None or len(events) == 0:
        return [()] * b
    per_world = not isinstance(events[0], (WorldEvent, dict))
    if per_world:
        if len(events) != b:
            raise ValueError(f"events: give one schedule for every world or a list of {b} schedules, "
                             f"got {len(events)}")
        return [check_events(e, config, f"events[{w}]") for w, e in enumerate(events)]
    return [check_events(events, config)] * b


def _intervene(core: WorldCore, state: WorldState, schedules) -> None:
    """Apply each world's events of the current step."""
    for w, schedule in enumerate(schedules):
        if schedule:
            core.apply_events(state, schedule, worlds=[w])


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


def _take_cast_state(state: CastState, index: np.ndarray) -> CastState:
    def take(x):
        return None if x is None else x[index]
    return CastState(state.log_belief[index], take(state.memory), take(state.after), take(state.family),
                     take(state.gem_cell), take(state.gems_before))


def gains_after(config: WorldConfig, personas: Sequence[Sequence[PersonaSpec]], seed: int, t: int, agent: int,
                horizon: int, agent_as: Sequence[Sequence[PersonaSpec]], rng: np.random.Generator,
                worlds: Sequence[int] | None = None, chunk: int = 4096) -> np.ndarray:
    """(W, 5, R, C) the gems, by colour, that ``agent`` of each world of ``worlds`` (default: all B)
    collects in the ``horizon`` steps from step ``t`` when it first takes action a and then acts as
    ``agent_as[w][r]``, R = ``len(agent_as[w])`` continuations per action (the same R personas for
    every first action; one row of ``agent_as`` per world of ``worlds``).

    The B worlds are replayed exactly as ``run_scene(config, personas, t, seed)`` ran them (scripted
    personas, no drivers, no events) up to step t; each continuation then draws its world and its
    agents' actions from ``rng`` (every other agent acts as its persona; imitators keep updating
    their beliefs). ``analysis/language.py`` estimates the hindsight label of "collect n gems" from
    these counts."""
    rows = [list(r) for r in personas]
    worlds = np.arange(len(rows)) if worlds is None else np.asarray(worlds, dtype=np.int64)
    if len(agent_as) != worlds.size or not worlds.size:
        raise ValueError("agent_as: give one row of personas for every world continued (at least one)")
    rollouts = len(agent_as[0])
    if any(len(r) != rollouts for r in agent_as):
        raise ValueError("agent_as: give every world the same number of personas")
    start: dict = {}

    def grab(step, state, cstate):
        if step == t:
            start["at"] = (state.copy(), cstate.copy())

    run_scene(config, rows, t, seed, on_step=grab)
    state0, cstate0 = start["at"]
    b, c = worlds.size, config.n_colors
    total = b * N_ACTIONS * rollouts
    long = replace(config, max_cycles=max(config.max_cycles, t + horizon + 1))
    core = WorldCore(long)
    out = np.zeros((total, c), np.int64)
    forced = np.tile(np.repeat(np.arange(N_ACTIONS), rollouts), b)  # (B * 5 * R,) world-major
    slot = np.repeat(np.arange(b), N_ACTIONS * rollouts)  # the row of agent_as
    rollout = np.tile(np.arange(rollouts), b * N_ACTIONS)
    for lo in range(0, total, chunk):
        sel = slice(lo, min(lo + chunk, total))
        w = worlds[slot[sel]]
        st = WorldState(agent_pos=state0.agent_pos[w], gem_pos=state0.gem_pos[w], gem_color=state0.gem_color,
                        last_action=state0.last_action[w], valued=state0.valued[w],
                        collected=state0.collected[w], t=state0.t)
        who = [agent_as[i][r] for i, r in zip(slot[sel], rollout[sel], strict=True)]
        cast = Cast([[*rows[i][:agent], h, *rows[i][agent + 1:]] for i, h in zip(w, who, strict=True)], long)
        cst = _take_cast_state(cstate0, w)
        for h in range(horizon):
            cst = cast.perceive(cst, core, st)
            sit = situations(core, st)
            p = cast.probs(sit, cst)
            if h == 0:
                p[:, agent] = np.eye(N_ACTIONS)[forced[sel]]
            a = sample_actions(p, rng)
            core.step_unchecked(st, a, rng)
            cst = cast.observe(cst, sit, a)
        out[sel] = st.collected[:, agent] - state0.collected[w, agent]
    return out.reshape(b, N_ACTIONS, rollouts, c)
