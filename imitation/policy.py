"""ModelPolicy: the trained multi-policy model acting for chosen agents of a scene.

It drives any subset of a scene's agents (one prompt each, changeable at any step), batched over
worlds and driven agents. Acting is incremental (``mirrorhall.imitation.model_io``, incremental
mode): each driven agent's memory is a running sum of evidence, so a step costs one evidence pass
over the agents seen and one head pass per driven agent, whatever the history length. Features
are what each driven agent sees (``mirrorhall.envs.perception``), computed from the world state
restricted to its view; ``ObservationActor`` computes the same from the agent's own observation.

``driver(prompts, schedule)`` gives the policy the interface ``run_scene`` drives every
non-scripted agent through, so a scene mixes scripted and model-driven agents freely.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from mirrorhall.envs.core import WorldCore, WorldState
from mirrorhall.envs.perception import entity_features, gem_sightings, look, unseen_gems
from mirrorhall.errors import ConfigError
from mirrorhall.imitation.model_io import (
    DEFAULT_PROMPT,
    Memory,
    check_compatible,
    distribution,
    encode_prompt_vectors,
    remember,
    step_inputs,
)


@dataclass(frozen=True)
class ModelState:
    """Per world and driven agent: its memory of every agent it has seen, and its prompt."""

    memory: Memory  # (B, M, N, de), (B, M, N)
    tokens: torch.Tensor  # (M, L) prompt token ids, (M, L, W) with an n-gram tokenizer
    prompt: torch.Tensor  # (M, d) encoded prompts
    texts: tuple[str, ...]
    looked: np.ndarray | None = None
    """(B, M, N, C, H*W) with ``ModelConfig.perspective``: where each driven agent, from what it
    saw, believes every agent last saw gems (``perception.look``); None before the first look."""
    gems: np.ndarray | None = None
    """(B, M, C, H*W) with ``ModelConfig.pickups``: what each driven agent saw of the gems at its
    last look (``perception.gem_sightings``); None before the first look."""
    before: np.ndarray | None = None
    """The same at the look before that, which the pickup columns read; None: no such look."""


class ModelPolicy:
    """The model acting for agents ``agents`` of a scene of ``core.config`` worlds."""

    def __init__(self, model, tokenizer, core: WorldCore, agents: Sequence[int]):
        n = core.config.n_agents
        self.agents = np.asarray(list(agents), dtype=np.int64)
        if self.agents.size == 0:
            raise ConfigError("ModelPolicy needs at least one model-driven agent")
        bad = [int(a) for a in self.agents if not 0 <= a < n]
        if bad:
            raise ConfigError(f"model-driven agent(s) {bad} are not in the scene (agents 0..{n - 1})")
        if len(set(self.agents.tolist())) != self.agents.size:
            raise ConfigError("model-driven agents must be distinct")
        check_compatible(model.config, core.config)
        self.model = model
        self.tokenizer = tokenizer
        self.core = core
        self.full_view = core.config.view_radius is None

    def _prompts(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_prompt_vectors(self.model, self.tokenizer, texts, self.core.config.n_agents)

    @torch.no_grad()
    def initial_state(self, batch_size: int, prompts: str | Sequence[str] = DEFAULT_PROMPT) -> ModelState:
        texts = [prompts] * self.agents.size if isinstance(prompts, str) else list(prompts)
        if len(texts) != self.agents.size:
            raise ConfigError(f"give one prompt per model-driven agent ({self.agents.size}), got {len(texts)}")
        tokens, prompt = self._prompts(texts)
        memory = Memory.empty(self.model, (batch_size, self.agents.size), self.core.config.n_agents)
        return ModelState(memory, tokens, prompt, tuple(texts))

    @torch.no_grad()
    def set_prompt(self, state: ModelState, agent: int, text: str) -> ModelState:
        """A new prompt for one driven agent, from now on; its memory of the scene is kept."""
        hits = np.flatnonzero(self.agents == agent)
        if hits.size == 0:
            raise ConfigError(f"agent {agent} is not model-driven; driven agents: {self.agents.tolist()}")
        texts = list(state.texts)
        texts[int(hits[0])] = text
        tokens, prompt = self._prompts(texts)
        return replace(state, tokens=tokens, prompt=prompt, texts=tuple(texts))

    def look(self, state: ModelState, world: WorldState) -> ModelState:
        """The driven agents look at this step (before ``features``): with the perspective columns,
        their estimate of what every agent saw is brought up to date; with the pickup columns, what
        they see of the gems now is kept and what they saw before moves to ``before``; otherwise
        nothing changes."""
        config = self.model.config
        if config.perspective:
            state = replace(state, looked=look(self.core, world, observers=self.agents, memory=state.looked))
        if config.pickups:
            state = replace(state, before=state.gems, gems=gem_sightings(self.core, world, observers=self.agents))
        return state

    def features(self, world: WorldState, state: ModelState | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(feats (B, M, N, 5, F), visible (B, M, N)): what each driven agent sees at this step.
        With the perspective and pickup columns they read ``state.looked`` and ``state.before``
        (after ``look``; without a state, as if this step were the first look)."""
        belief = before = None
        if self.model.config.perspective:
            looked = None if state is None else state.looked
            belief = look(self.core, world, observers=self.agents) if looked is None else looked
        if self.model.config.pickups:
            before = None if state is None else state.before
            if before is None:
                before = unseen_gems(self.core.config, world.batch_size, self.agents.size)
        return entity_features(self.core, world, observers=self.agents, place=bool(self.model.config.place),
                               belief=belief, before=before)

    @torch.no_grad()
    def probs(self, state: ModelState, feats: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """(B, M, 5) action distributions of the driven agents at this step."""
        b, m = state.memory.char_count.shape[:2]
        f = torch.from_numpy(feats).reshape(b * m, *feats.shape[2:])  # (B * M, N, 5, F)
        vis = torch.from_numpy(visible).reshape(b * m, -1)  # (B * M, N)
        memory = Memory(state.memory.char_sum.reshape(b * m, *state.memory.char_sum.shape[2:]),
                        state.memory.char_count.reshape(b * m, -1))
        ego = torch.from_numpy(self.agents).repeat(b)
        tokens = state.tokens.repeat(b, *[1] * (state.tokens.dim() - 1))  # (B * M, L[, W])
        logits = self.model(**step_inputs(memory, f, vis, ego, state.prompt.repeat(b, 1), tokens))
        return distribution(logits).reshape(b, m, -1)

    @torch.no_grad()
    def observe(self, state: ModelState, feats: np.ndarray, visible: np.ndarray, actions: np.ndarray) -> ModelState:
        """Add the evidence of the step just taken: what the driven agents saw, actions (B, N)."""
        act = torch.from_numpy(np.asarray(actions, dtype=np.int64))  # (B, N)
        seen = torch.from_numpy(visible).float()  # (B, M, N)
        f = torch.from_numpy(feats)  # (B, M, N, 5, F)
        if self.full_view:  # every driven agent sees the same evidence: computed once
            memory = remember(self.model, state.memory, f[:, 0], seen, act)
        else:
            memory = remember(self.model, state.memory, f, seen, act[:, None].expand(-1, self.agents.size, -1))
        return replace(state, memory=memory)

    def driver(self, prompts: str | Sequence[str] = DEFAULT_PROMPT,
               schedule: Mapping[int, Mapping[int, str]] | None = None) -> ModelDriver:
        """This policy with its prompts, for ``run_scene(drivers=...)``; ``schedule``
        {step: {agent: text}} changes prompts before that step."""
        return ModelDriver(self, prompts, dict(schedule or {}))


@dataclass(frozen=True)
class DriverState:
    model: ModelState
    step: tuple[np.ndarray, np.ndarray] | None  # (features, visible) of the step being taken


class ModelDriver:
    """A ``ModelPolicy`` as ``run_scene`` drives agents: ``initial_state``, ``act``, ``observe``."""

    def __init__(self, policy: ModelPolicy, prompts, schedule: dict[int, Mapping[int, str]]):
        self.policy = policy
        self.agents = policy.agents
        self.prompts = prompts
        self.schedule = schedule
        for step, changes in schedule.items():
            for agent in changes:
                if agent not in self.agents:
                    raise ConfigError(f"the prompt schedule at step {step} names agent {agent}, which is not "
                                      f"model-driven; driven agents: {self.agents.tolist()}")

    def initial_state(self, batch_size: int) -> DriverState:
        return DriverState(self.policy.initial_state(batch_size, self.prompts), None)

    def act(self, world: WorldState, state: DriverState) -> tuple[np.ndarray, DriverState]:
        """(B, M, 5) the driven agents' distributions at step ``world.t``."""
        mstate = state.model
        for agent, text in self.schedule.get(world.t, {}).items():
            mstate = self.policy.set_prompt(mstate, agent, text)
        mstate = self.policy.look(mstate, world)
        feats, vis = self.policy.features(world, mstate)
        return self.policy.probs(mstate, feats, vis), DriverState(mstate, (feats, vis))

    def observe(self, state: DriverState, actions: np.ndarray) -> DriverState:
        feats, vis = state.step
        return DriverState(self.policy.observe(state.model, feats, vis, actions), None)
