"""mirrorhall_v0 as an RLlib multi-agent env (new API stack), native over the batched core.

Import this module explicitly (``from mirrorhall.envs import rllib_env``): it imports Ray and
RLlib at module level, and ``mirrorhall.envs`` never imports it, so ``import mirrorhall`` stays
light. ``register_rllib_env()`` registers the env under ``"mirrorhall_v0"`` with
``ray.tune.registry.register_env``; ``MirrorhallMultiAgentEnv`` can also be passed to
``config.environment(...)`` directly as a class.

Why native and not ``ParallelPettingZooEnv``: speed is no reason either way, correctness is.
Random actions through the RLlib env API on 2 (shared) CPU cores, best of 3 x 5000 steps, in env
steps per second: 8 agents on 11 x 11, wrapper 9.8k vs native 9.6k; 2 agents on 6 x 5, 11.9k vs
11.2k; 32 agents on 15 x 13, 5.3k vs 5.6k. Through a ``MultiAgentEnvRunner`` sampling random
actions, 8 agents: 671 vs 784; 2 agents: 1372 vs 1383. The core's ``observations``/``step`` dominate
the env, and RLlib's EnvRunner (about 1 ms per env step) dominates both. The native env is kept
because the wrapper (1) orders ``agents``/``possible_agents`` by a ``set``, i.e. by string hash,
which changes between processes (so the order RLlib batches agents in, and a seeded run, can
change from run to run); (2) needs ``valued`` smuggled into ``reset`` options, which RLlib never
passes (it resets with ``options=None``); (3) resets the env once in its constructor and never
updates ``agents``. The rules, spaces and observation layout
are those of the ParallelEnv's spec card (``mirrorhall.envs.mirrorhall_v0``); for the same seed
and actions both give identical observations, rewards and infos (tested).

env_config
    The ParallelEnv keyword arguments (``n_agents``, ``width``, ``height``, ``n_colors``,
    ``gems_per_color``, ``view_radius``, ``max_cycles``, ``interior_walls``, ``render_mode``;
    ``render_mode`` here is ``"rgb_array"`` or ``"ansi"``), plus:

    ``valued``
        The colour each agent is rewarded for, applied at every reset: one colour name for every
        agent (``"red"``), or a mapping ``{"agent_0": "red", ...}`` (unlisted agents value any
        colour). Default: any colour, so every gem pays. ``reset(options={"valued": {...}})``
        overrides single agents for one episode, as in the ParallelEnv.
    ``seed``
        Seeds the env's generator at construction, so that a first ``reset()`` without a seed is
        reproducible. Env ``(worker_index, vector_index) = (0, 0)`` uses ``seed`` itself (the same
        generator as ``ParallelEnv.reset(seed=seed)``); other copies derive their own stream from
        ``(seed, worker_index, vector_index)``. An explicit ``reset(seed=...)`` wins: RLlib seeds
        each EnvRunner's envs on their first reset when ``.debugging(seed=...)`` is set.

Unknown keys raise ValueError naming the allowed ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from mirrorhall import streams
from mirrorhall.envs.core import ANY_COLOR, N_ACTIONS, WorldConfig, WorldCore
from mirrorhall.envs.mirrorhall_v0 import ENV_NAME

RENDER_MODES = ("rgb_array", "ansi")

WORLD_KEYS = ("n_agents", "width", "height", "n_colors", "gems_per_color", "view_radius",
              "max_cycles", "interior_walls")
ENV_CONFIG_KEYS = (*WORLD_KEYS, "render_mode", "valued", "seed")


def world_config(env_config: Mapping | None) -> WorldConfig:
    """The ``WorldConfig`` an env_config describes (its world keys only); checks every key."""
    env_config = dict(env_config or {})
    unknown = sorted(set(env_config) - set(ENV_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"env_config: unknown key(s) {unknown}; allowed: {', '.join(ENV_CONFIG_KEYS)}")
    return WorldConfig(**{k: env_config[k] for k in WORLD_KEYS if k in env_config})


def valued_indices(config: WorldConfig, valued, agents) -> np.ndarray:
    """(N,) colour index per agent from a colour name, a {agent: colour} mapping or None."""
    out = np.full(config.n_agents, ANY_COLOR, dtype=np.int64)
    if valued is None:
        return out
    if isinstance(valued, str):
        out[:] = config.color_index(valued)
        return out
    if not isinstance(valued, Mapping):
        raise ValueError(f"valued must be a colour name or a mapping agent -> colour; got {valued!r}")
    index = {a: i for i, a in enumerate(agents)}
    for agent, color in valued.items():
        if agent not in index:
            raise ValueError(f"valued: unknown agent {agent!r}; agents are {agents[0]}..{agents[-1]}")
        try:
            out[index[agent]] = config.color_index(color)
        except ValueError as err:
            raise ValueError(f"valued[{agent!r}]: {err}") from None
    return out


class MirrorhallMultiAgentEnv(MultiAgentEnv):
    """One world of the batched core behind RLlib's ``MultiAgentEnv`` API.

    Every agent acts at every step; the episode ends for all agents at once by truncation after
    ``max_cycles`` steps (``truncateds["__all__"]``), never by termination.
    """

    metadata = {"render_modes": list(RENDER_MODES), "name": ENV_NAME}

    def __init__(self, config: Mapping | None = None):
        super().__init__()
        env_config = dict(config or {})
        self.config = world_config(env_config)
        self.core = WorldCore(self.config)
        self.render_mode = env_config.get("render_mode")
        if self.render_mode is not None and self.render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {', '.join(RENDER_MODES)} or None; "
                             f"got {self.render_mode!r}")
        n = self.config.n_agents
        self.possible_agents = [f"agent_{i}" for i in range(n)]
        self.agents = self.possible_agents[:]
        self._agent_ids = set(self.possible_agents)
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._valued = valued_indices(self.config, env_config.get("valued"), self.possible_agents)
        # The same spaces as the ParallelEnv's spec card.
        high = float(max(self.config.width, self.config.height))
        obs_space = spaces.Box(-1.0, high, (self.config.obs_dim,), np.float32)
        act_space = spaces.Discrete(N_ACTIONS)
        self.observation_spaces = dict.fromkeys(self.possible_agents, obs_space)
        self.action_spaces = dict.fromkeys(self.possible_agents, act_space)
        self.observation_space = spaces.Dict(self.observation_spaces)
        self.action_space = spaces.Dict(self.action_spaces)

        seed = env_config.get("seed")
        worker = getattr(config, "worker_index", 0)
        vector = getattr(config, "vector_index", 0)
        if seed is None or (worker, vector) == (0, 0):
            self._np_random, self._np_random_seed = seeding.np_random(seed)
        else:
            self._np_random = streams.rng(streams.ENV_RUNNER, int(seed), int(worker), int(vector))
        self.world_state = None
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
        valued = self._valued
        if isinstance(options, dict) and options.get("valued"):
            if not isinstance(options["valued"], Mapping):
                raise ValueError("options['valued'] must map agent names to colour names")
            valued = valued.copy()
            over = valued_indices(self.config, options["valued"], self.possible_agents)
            keys = [self._index[a] for a in options["valued"]]
            valued[keys] = over[keys]
        self.world_state = self.core.reset(1, self._np_random, valued[None])
        self.agents = self.possible_agents[:]
        self._done = False
        obs = self.core.observations(self.world_state)[0]  # (N, obs_dim)
        return dict(zip(self.agents, obs, strict=True)), {a: {} for a in self.agents}

    def step(self, action_dict: dict):
        if self._done:
            raise ValueError("step() called before reset() or after the episode ended; call reset()")
        n = self.config.n_agents
        act = np.zeros(n, dtype=np.int64)  # agents without an action stay
        if len(action_dict) == n:
            try:
                act[:] = [action_dict[a] for a in self.possible_agents]
            except KeyError:
                act = self._actions_slow(action_dict)
        else:
            act = self._actions_slow(action_dict)
        if act.min() < 0 or act.max() >= N_ACTIONS:
            raise ValueError(f"actions must be integers in 0..{N_ACTIONS - 1}; got {action_dict!r}")
        before = self.world_state.collected[0].sum(-1)  # (N,)
        rew = self.core.step(self.world_state, act[None], self._np_random)[0]  # (N,)
        got = self.world_state.collected[0].sum(-1) - before
        done = self.world_state.t >= self.config.max_cycles
        self._done = done
        obs = self.core.observations(self.world_state)[0]  # (N, obs_dim)
        agents = self.agents
        rewards = dict(zip(agents, rew.tolist(), strict=True))
        terminateds = dict.fromkeys(agents, False)
        terminateds["__all__"] = False
        truncateds = dict.fromkeys(agents, done)
        truncateds["__all__"] = done
        infos = {a: {"collected": g} for a, g in zip(agents, got.tolist(), strict=True)}
        return dict(zip(agents, obs, strict=True)), rewards, terminateds, truncateds, infos

    def _actions_slow(self, action_dict: dict) -> np.ndarray:
        act = np.zeros(self.config.n_agents, dtype=np.int64)
        for agent, a in action_dict.items():
            if agent not in self._index:
                raise ValueError(f"unknown agent {agent!r}; agents are agent_0..agent_{self.config.n_agents - 1}")
            act[self._index[agent]] = a
        return act

    def render(self):
        if self.render_mode is None:
            return None
        if self.world_state is None:
            raise ValueError("render() called before reset(); call reset()")
        from mirrorhall.envs import render

        if self.render_mode == "ansi":
            return render.render_ansi(self.config, self.world_state)
        return render.render_rgb(self.config, self.world_state)


def make_rllib_env(env_config: Mapping | None = None) -> MirrorhallMultiAgentEnv:
    """The env creator registered with Tune: ``env_config`` (an RLlib ``EnvContext``) -> env."""
    return MirrorhallMultiAgentEnv(env_config)


def register_rllib_env(name: str = ENV_NAME) -> str:
    """Register the env with ``ray.tune.registry.register_env`` under ``name``; returns ``name``."""
    from ray.tune.registry import register_env

    register_env(name, make_rllib_env)
    return name
