"""mirrorhall_v0: a gem-collecting grid world where every agent wears a visible id.

Spec card
=========

``from mirrorhall.envs import mirrorhall_v0``; ``mirrorhall_v0.parallel_env(**kwargs)`` gives a
PettingZoo ``ParallelEnv``, ``mirrorhall_v0.env(**kwargs)`` the AEC version (``parallel_to_aec``).

Agents
    ``agent_0 ... agent_{N-1}``; agent i wears id i. Nobody dies: the episode ends for every agent
    at once by truncation after ``max_cycles`` steps (never by termination).

Actions
    ``Discrete(5)``: 0 stay, 1 up, 2 down, 3 left, 4 right. Moves are simultaneous. A move into a
    wall leaves the agent where it was. Agents do not block each other: several may share a cell.

Gems and rewards
    ``n_colors`` colours (red, green, blue, yellow, purple, orange, cyan, pink) with
    ``gems_per_color`` gems each. An agent that ends a step on a gem collects it; when several
    agents end on the same gem, it goes to the one whose ``(id - t) mod N`` is smallest (t = the
    step index before the move), so priority rotates with time. A collected gem respawns at once on
    a random cell holding no wall, agent or gem (drawn from the env's seeded generator). Reward:
    +1 for collecting a gem of the agent's valued colour (any colour by default), else 0. Set the
    valued colours with ``reset(options={"valued": {"agent_0": "red", ...}})`` (colour names or
    "any"; other option keys are ignored).

Interventions (events)
    ``reset(options={"events": [...]})`` schedules gem moves and swaps for the episode, e.g.
    ``{"step": 5, "kind": "swap", "gem": "red:0", "other": "blue:0"}`` or
    ``{"step": 3, "kind": "move", "gem": 2, "to": [4, 7]}``. An event of step t happens when the
    world reaches step t (t = 0: right after reset), before anything observes it: observations,
    ``state()`` and frames of step t show its result, and ``infos[agent]["events"]`` of that step
    lists it (the key is present only at steps with events). Gems are numbered colour-major (gem g
    has colour ``g // gems_per_color``) or named ``"colour:k"``. A swap exchanges two gems'
    cells; a move needs a cell with no wall, agent or other gem. Events draw no random numbers, so
    an episode without events is exactly what it was before events existed.
    ``mirrorhall.envs.core.WorldEvent`` and ``WorldCore.apply_events`` are the programmatic form.
    A bad event (unknown gem or kind, a step outside 0..max_cycles - 1, a wall cell; an occupied
    cell when the move happens) raises ValueError naming the field (``events[0].gem``).

Observation (``Box(-1, max(width, height), (obs_dim,), float32)``), one flat vector made of:
    1. ``grid``  (height, width, 2 + n_colors), row-major, channels last: channel 0 = cell is
       visible, 1 = wall, 2 + c = a gem of colour c. Cells out of view are all zeros.
    2. ``agents`` (n_agents, 5), one row per agent id in id order: visible (0/1), row, col, last
       action (-1 before the first step), is_self (0/1). Agents out of view: visible 0 and -1 in
       row, col and last action.
    3. ``goal`` (n_colors + 1): one-hot of the agent's valued colour; the last entry means "any".
    ``obs_dim = height * width * (2 + n_colors) + 5 * n_agents + n_colors + 1``.
    ``mirrorhall.envs.core.split_observation`` cuts a vector into these named arrays.
    Full observability by default; with ``view_radius = r`` an agent sees the cells (and the gems
    and agents on them) within Chebyshev distance r of itself. It always sees its own row.

State
    ``state()`` is the global view: the observation an all-seeing agent would get, with no
    ``is_self`` flag and the goal segment replaced by the step counter; ``world_state`` holds the
    core's arrays.

Arguments
    n_agents=8, width=11, height=11, n_colors=4, gems_per_color=2, view_radius=None,
    max_cycles=100, interior_walls=(), render_mode=None ("rgb_array", "ansi" or "human").
    Invalid values raise ValueError naming the field and the allowed values.

Version history
    v0: first release; interventions (``events``) added without changing any episode that has none.
"""

from __future__ import annotations

import functools

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv
from pettingzoo.utils import parallel_to_aec, wrappers

from mirrorhall.envs.core import ANY_COLOR, N_ACTIONS, WorldConfig, WorldCore, check_events

ENV_NAME = "mirrorhall_v0"
# Action types accepted without further checks (bool and numpy bool are not among them).
_INT_TYPES = frozenset({int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                        np.uint64})
RENDER_MODES = ("human", "rgb_array", "ansi")


class MirrorhallParallelEnv(ParallelEnv):
    """The PettingZoo adapter over one world (B = 1) of the batched core."""

    metadata = {"render_modes": list(RENDER_MODES), "name": ENV_NAME, "is_parallelizable": True,
                "render_fps": 5}

    def __init__(self, render_mode: str | None = None, **kwargs):
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {', '.join(RENDER_MODES)} or None; got {render_mode!r}")
        self.config = WorldConfig(**kwargs)
        self.core = WorldCore(self.config)
        self.render_mode = render_mode
        self.max_cycles = self.config.max_cycles
        self.possible_agents = [f"agent_{i}" for i in range(self.config.n_agents)]
        self.agents = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        high = float(max(self.config.width, self.config.height))
        self._obs_space = spaces.Box(-1.0, high, (self.config.obs_dim,), np.float32)
        self._act_space = spaces.Discrete(N_ACTIONS)
        self.observation_spaces = dict.fromkeys(self.possible_agents, self._obs_space)
        self.action_spaces = dict.fromkeys(self.possible_agents, self._act_space)
        self._global_core = WorldCore(WorldConfig(**{**self.config.__dict__, "view_radius": None}))
        self.state_space = spaces.Box(-1.0, float(max(high, self.max_cycles)), (self.config.obs_dim,), np.float32)
        self.world_state = None
        self.events = ()  # the episode's checked schedule (reset options "events")
        self.np_random, _ = seeding.np_random(None)
        self._viewer = None

    @functools.cache  # noqa: B019 - spaces are cached objects by design
    def observation_space(self, agent):
        return self._obs_space

    @functools.cache  # noqa: B019
    def action_space(self, agent):
        return self._act_space

    def agent_index(self, agent: str) -> int:
        if agent not in self._index:
            raise ValueError(f"unknown agent {agent!r}; agents are agent_0..agent_{self.config.n_agents - 1}")
        return self._index[agent]

    def _valued(self, options) -> np.ndarray:
        valued = np.full((1, self.config.n_agents), ANY_COLOR, dtype=np.int64)
        spec = (options or {}).get("valued", {}) if isinstance(options, dict) else {}
        if not isinstance(spec, dict):
            raise ValueError("options['valued'] must map agent names to colour names")
        for agent, color in spec.items():
            i = self.agent_index(agent)
            try:
                valued[0, i] = self.config.color_index(color)
            except ValueError as err:
                raise ValueError(f"options['valued'][{agent!r}]: {err}") from None
        return valued

    def reset(self, seed=None, options=None):
        if seed is not None:
            if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise ValueError(f"seed must be None or a non-negative integer, got {seed!r}")
            self.np_random, _ = seeding.np_random(int(seed))
        valued = self._valued(options)
        self.events = check_events((options or {}).get("events") if isinstance(options, dict) else None,
                                   self.config, "options['events']")
        self.world_state = self.core.reset(1, self.np_random, valued)
        applied = self.core.apply_events(self.world_state, self.events)
        self.agents = self.possible_agents[:]
        obs = self._observations()
        infos = {a: ({"events": [e.to_json() for e in applied]} if applied else {}) for a in self.agents}
        return obs, infos

    def _observations(self) -> dict:
        o = self.core.observations(self.world_state)[0]  # (N, obs_dim); self.agents is in id order
        return dict(zip(self.agents, o, strict=True))

    def step(self, actions):
        if self.world_state is None or not self.agents:
            raise ValueError("step() called before reset() or after the episode ended; call reset()")
        if not isinstance(actions, dict):
            raise ValueError(f"actions must be a dict {{agent name: action}}, got {type(actions).__name__}")
        act = [0] * self.config.n_agents  # agents left out of the dict stay
        index = self._index
        for agent, a in actions.items():
            i = index.get(agent)
            if i is None:
                self.agent_index(agent)  # raises the unknown-agent error
            if type(a) not in _INT_TYPES or not 0 <= a < N_ACTIONS:  # valid ints skip the checks
                if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)) \
                        or not 0 <= int(a) < N_ACTIONS:
                    raise ValueError(f"action for {agent} must be an integer in 0..{N_ACTIONS - 1}; got {a!r}")
                a = int(a)
            act[i] = a
        before = self.world_state.collected[0].copy()
        rew = self.core.step_unchecked(self.world_state, np.array([act], dtype=np.int64), self.np_random)[0]
        got = (self.world_state.collected[0] - before).sum(-1).tolist()
        applied = self.core.apply_events(self.world_state, self.events) if self.events else []
        truncated = self.world_state.t >= self.max_cycles
        obs = self._observations()
        agents = self.agents  # every agent, in id order, until the episode ends
        rewards = dict(zip(agents, rew.tolist(), strict=True))
        terminations = dict.fromkeys(agents, False)
        truncations = dict.fromkeys(agents, truncated)
        infos = {a: {"collected": g} for a, g in zip(agents, got, strict=True)}
        if applied:
            for info in infos.values():
                info["events"] = [e.to_json() for e in applied]
        if truncated:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return obs, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        if self.world_state is None:
            raise ValueError("state() called before reset(); call reset()")
        o = self._global_core.observations(self.world_state)[0, 0].copy()
        off, shape = self.config.obs_layout["agents"]
        o[off + 4: off + int(np.prod(shape)): 5] = 0.0
        goff, gshape = self.config.obs_layout["goal"]
        o[goff: goff + gshape[0]] = 0.0
        o[goff] = self.world_state.t
        return o

    def render(self):
        if self.render_mode is None:
            return None
        if self.world_state is None:
            raise ValueError("render() called before reset(); call reset()")
        from mirrorhall.envs import render

        if self.render_mode == "ansi":
            return render.render_ansi(self.config, self.world_state)
        frame = render.render_rgb(self.config, self.world_state, events=self.events)
        if self.render_mode == "rgb_array":
            return frame
        if self._viewer is None:
            self._viewer = render.HumanViewer()
        self._viewer.show(frame, render.render_ansi(self.config, self.world_state))
        return None

    def close(self):
        if self._viewer is not None:
            self._viewer.close()
            self._viewer = None


def parallel_env(**kwargs) -> MirrorhallParallelEnv:
    """The ParallelEnv; keyword arguments as in the spec card."""
    return MirrorhallParallelEnv(**kwargs)


raw_env = parallel_env


def env(**kwargs):
    """The AEC env: ``parallel_to_aec`` over the ParallelEnv, with PettingZoo's safety wrappers."""
    aec = parallel_to_aec(parallel_env(**kwargs))
    aec = wrappers.AssertOutOfBoundsWrapper(aec)
    return wrappers.OrderEnforcingWrapper(aec)
