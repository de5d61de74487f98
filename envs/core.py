"""The batched world core: B worlds x N agents stepped with numpy arrays.

This module knows nothing of PettingZoo. The ParallelEnv in ``mirrorhall_v0`` adapts one world
(B = 1); data generation and RLlib step many worlds at once. The rules are documented in the
spec card of ``mirrorhall.envs.mirrorhall_v0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

ACTIONS = ("stay", "up", "down", "left", "right")
N_ACTIONS = len(ACTIONS)
# (5, 2) row/column offset of each action; rows grow downwards.
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)
NO_ACTION = -1
COLOR_NAMES = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink")
ANY_COLOR = -1


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        span = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name} must be {span}, got {value}")
    return int(value)


MAX_CYCLES = 2**24


def _check_walls(value) -> tuple[tuple[int, int], ...]:
    """``interior_walls`` as a tuple of (row, col) integer pairs; ValueError for anything else."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"interior_walls must be a sequence of (row, col) pairs, got {value!r}")
    walls = []
    for cell in value:
        if isinstance(cell, (str, bytes)) or not hasattr(cell, "__len__") or len(cell) != 2:
            raise ValueError(f"interior_walls: each wall must be a (row, col) pair, got {cell!r}")
        walls.append((_check_int("interior_walls row", cell[0], 0),
                      _check_int("interior_walls col", cell[1], 0)))
    return tuple(walls)


@dataclass(frozen=True)
class WorldConfig:
    """Everything that fixes a world's rules and sizes."""

    n_agents: int = 8
    """Number of agents, named agent_0 ... agent_{N-1}."""
    width: int = 11
    """Grid width in cells, border walls included."""
    height: int = 11
    """Grid height in cells, border walls included."""
    n_colors: int = 4
    """Number of gem colours (names from COLOR_NAMES, at most 8)."""
    gems_per_color: int = 2
    """Gems of each colour on the grid at all times (a collected gem respawns)."""
    view_radius: int | None = None
    """None: full observability; r: an agent sees cells within Chebyshev distance r."""
    max_cycles: int = 100
    """Steps before every agent is truncated."""
    interior_walls: tuple[tuple[int, int], ...] = field(default=())
    """Extra wall cells (row, col) inside the border."""

    def __post_init__(self):
        _check_int("n_agents", self.n_agents, 1, 256)
        _check_int("width", self.width, 3, 64)
        _check_int("height", self.height, 3, 64)
        _check_int("n_colors", self.n_colors, 1, len(COLOR_NAMES))
        _check_int("gems_per_color", self.gems_per_color, 1, 16)
        # the step counter travels in the float32 state(), exact up to 2**24
        _check_int("max_cycles", self.max_cycles, 1, MAX_CYCLES)
        if self.view_radius is not None:
            _check_int("view_radius", self.view_radius, 1, 64)
        walls = _check_walls(self.interior_walls)
        for r, c in walls:
            if not (0 < r < self.height - 1 and 0 < c < self.width - 1):
                raise ValueError(
                    f"interior_walls: cell ({r}, {c}) is not inside the border "
                    f"(rows 1..{self.height - 2}, cols 1..{self.width - 2})"
                )
        object.__setattr__(self, "interior_walls", walls)
        free = int((~self.walls()).sum())
        need = self.n_agents + self.n_gems
        if need > free:
            raise ValueError(
                f"grid too small: {self.width}x{self.height} has {free} free cells but "
                f"n_agents + n_colors * gems_per_color = {need}; enlarge width/height or use "
                f"fewer agents or gems"
            )

    @property
    def n_gems(self) -> int:
        return self.n_colors * self.gems_per_color

    @property
    def color_names(self) -> tuple[str, ...]:
        return COLOR_NAMES[: self.n_colors]

    def color_index(self, name: str) -> int:
        """Index of a colour name; 'any' is ANY_COLOR."""
        if name == "any":
            return ANY_COLOR
        if name not in self.color_names:
            raise ValueError(
                f"unknown colour {name!r}; allowed: {', '.join(self.color_names + ('any',))}"
            )
        return self.color_names.index(name)

    def walls(self) -> np.ndarray:
        """(H, W) bool: border walls plus interior walls."""
        w = np.zeros((self.height, self.width), dtype=bool)
        w[0, :] = w[-1, :] = w[:, 0] = w[:, -1] = True
        for r, c in self.interior_walls:
            w[r, c] = True
        return w

    @property
    def obs_layout(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """Name -> (offset, shape) of each segment of the flat observation."""
        grid = (self.height, self.width, 2 + self.n_colors)
        agents = (self.n_agents, AGENT_COLUMNS)
        goal = (self.n_colors + 1,)
        out, off = {}, 0
        for name, shape in (("grid", grid), ("agents", agents), ("goal", goal)):
            out[name] = (off, shape)
            off += int(np.prod(shape))
        return out

    @property
    def obs_dim(self) -> int:
        off, shape = self.obs_layout["goal"]
        return off + int(np.prod(shape))


# Columns of the agent table in the observation.
AGENT_COLUMNS = 5  # visible, row, col, last_action, is_self


@dataclass
class WorldState:
    """The state of B worlds. Arrays are owned by the state; ``copy()`` before keeping one."""

    agent_pos: np.ndarray  # (B, N, 2) int64 row, col
    gem_pos: np.ndarray  # (B, G, 2) int64 row, col
    gem_color: np.ndarray  # (G,) int64, the same in every world
    last_action: np.ndarray  # (B, N) int64, NO_ACTION before the first step
    valued: np.ndarray  # (B, N) int64 colour each agent is rewarded for, ANY_COLOR for any
    collected: np.ndarray  # (B, N, C) int64 gems collected so far, by colour
    t: int = 0

    def copy(self) -> WorldState:
        return WorldState(
            **{f.name: (getattr(self, f.name).copy() if f.name != "t" else self.t) for f in fields(self)}
        )

    @property
    def batch_size(self) -> int:
        return self.agent_pos.shape[0]


EVENT_KINDS = ("move", "swap")
"""What an event does: ``move`` puts one gem on a chosen cell, ``swap`` makes two gems trade places."""


@dataclass(frozen=True)
class WorldEvent:
    """An intervention in the world: at step ``step``, gem ``gem`` moves to cell ``to`` (``move``)
    or trades places with gem ``other`` (``swap``).

    An event of step t happens when the world reaches step t (after reset for t = 0, after the
    t-th move otherwise) and before anything observes it, so the observations, ``state()`` and
    frames of step t show the gems where the event put them. Gems are numbered colour-major:
    gem g has colour ``g // gems_per_color`` (with 2 per colour, gems 0 and 1 are red, 2 and 3
    green, ...); JSON may also name a gem ``"colour:k"`` (``"red:1"`` is gem 1). Events of one
    step happen in the order given. ``check_events`` validates a schedule against a world.
    """

    step: int
    """The step at which the event happens, 0..max_cycles - 1."""
    kind: str
    """'move' or 'swap'."""
    gem: int
    """The gem moved, or the first of the two swapped."""
    other: int | None = None
    """swap: the other gem."""
    to: tuple[int, int] | None = None
    """move: the (row, col) cell the gem goes to; it must hold no wall, agent or other gem."""

    def to_json(self) -> dict:
        out = {"step": self.step, "kind": self.kind, "gem": self.gem}
        if self.kind == "swap":
            out["other"] = self.other
        else:
            out["to"] = list(self.to)
        return out

    def cells(self, state: WorldState, world: int = 0) -> list[tuple[int, int]]:
        """The cells this event touches in world ``world`` of ``state`` (after it happened)."""
        gems = [self.gem] + ([self.other] if self.kind == "swap" else [])
        return [tuple(int(v) for v in state.gem_pos[world, g]) for g in gems]

    def describe(self, config: WorldConfig) -> str:
        """A short caption: ``swap red gem 0 <-> blue gem 4`` or ``move red gem 0 -> (3, 4)``."""
        def name(g):
            return f"{config.color_names[g // config.gems_per_color]} gem {g}"
        if self.kind == "swap":
            return f"swap {name(self.gem)} <-> {name(self.other)}"
        return f"move {name(self.gem)} -> ({self.to[0]}, {self.to[1]})"


def _event_gem(config: WorldConfig, value, where: str) -> int:
    if isinstance(value, str):
        color, _, k = value.partition(":")
        if color not in config.color_names or not k.isdigit() or int(k) >= config.gems_per_color:
            raise ValueError(
                f"{where}: unknown gem {value!r}; name a gem 0..{config.n_gems - 1} or 'colour:k' with a "
                f"colour of {', '.join(config.color_names)} and k in 0..{config.gems_per_color - 1}")
        return config.color_names.index(color) * config.gems_per_color + int(k)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < config.n_gems:
        raise ValueError(f"{where}: unknown gem {value!r}; gems are 0..{config.n_gems - 1} "
                         f"(or 'colour:k')")
    return int(value)


def check_events(events, config: WorldConfig, name: str = "events") -> tuple[WorldEvent, ...]:
    """A schedule of events (``WorldEvent`` objects or their JSON objects) checked against a world:
    known kinds and gems, steps inside the episode, move targets inside the grid and off the walls.
    ``ValueError`` names the field (``events[2].to``) otherwise. Whether a move's cell is free of
    agents and gems is known only when the event happens (``WorldCore.apply_events``)."""
    if events is None:
        return ()
    if isinstance(events, (str, bytes, dict)) or not hasattr(events, "__iter__"):
        raise ValueError(f"{name} must be a list of events, got {type(events).__name__}")
    out = []
    walls = config.walls()
    for i, ev in enumerate(events):
        where = f"{name}[{i}]"
        data = ev.to_json() if isinstance(ev, WorldEvent) else ev
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object with step, kind, gem and other or to; got {data!r}")
        unknown = sorted(set(data) - {"step", "kind", "gem", "other", "to"}, key=str)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: step, kind, gem, other, to")
        for key in ("step", "kind", "gem"):
            if key not in data:
                raise ValueError(f"{where}.{key} is missing")
        step = _check_int(f"{where}.step", data["step"], 0, config.max_cycles - 1)
        kind = data["kind"]
        if kind not in EVENT_KINDS:
            raise ValueError(f"{where}.kind must be one of {', '.join(EVENT_KINDS)}; got {kind!r}")
        gem = _event_gem(config, data["gem"], f"{where}.gem")
        if kind == "swap":
            if data.get("to") is not None:
                raise ValueError(f"{where}.to: a swap takes 'other', not 'to'")
            if data.get("other") is None:
                raise ValueError(f"{where}.other is missing: a swap needs the other gem")
            other = _event_gem(config, data["other"], f"{where}.other")
            if other == gem:
                raise ValueError(f"{where}.other: a gem cannot swap with itself (gem {gem})")
            out.append(WorldEvent(step, kind, gem, other=other))
            continue
        if data.get("other") is not None:
            raise ValueError(f"{where}.other: a move takes 'to', not 'other'")
        to = data.get("to")
        if to is None:
            raise ValueError(f"{where}.to is missing: a move needs a (row, col) cell")
        if isinstance(to, (str, bytes)) or not hasattr(to, "__len__") or len(to) != 2:
            raise ValueError(f"{where}.to must be a (row, col) pair, got {to!r}")
        r = _check_int(f"{where}.to row", to[0], 0, config.height - 1)
        c = _check_int(f"{where}.to col", to[1], 0, config.width - 1)
        if walls[r, c]:
            raise ValueError(f"{where}.to: cell ({r}, {c}) is a wall; choose a floor cell")
        out.append(WorldEvent(step, kind, gem, to=(r, c)))
    return tuple(out)


def events_from_json(text: str, config: WorldConfig, name: str = "events") -> tuple[WorldEvent, ...]:
    """A schedule from JSON text (a list of event objects), checked by ``check_events``."""
    import json

    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name} is not valid JSON ({err.msg}); give a list such as "
                         '[{"step": 5, "kind": "swap", "gem": "red:0", "other": "blue:0"}]') from None
    return check_events(data, config, name)


class WorldCore:
    """Steps B worlds of one configuration. Randomness comes from the generator passed in."""

    def __init__(self, config: WorldConfig):
        self.config = config
        self.wall = config.walls()  # (H, W)
        self.free_cells = np.flatnonzero(~self.wall)  # (F,) flat indices of non-wall cells
        self.gem_color = np.repeat(np.arange(config.n_colors), config.gems_per_color)  # (G,)
        # Per-configuration lookup tables, indexed by flat cell (row * width + col):
        h, w = config.height, config.width
        cells = np.arange(h * w)
        self.cell_pos = np.stack(np.divmod(cells, w), axis=-1)  # (H*W, 2) int64 row, col
        new = self.cell_pos[:, None, :] + MOVES  # (H*W, 5, 2); only used from free cells
        inside = (new >= 0).all(-1) & (new[..., 0] < h) & (new[..., 1] < w)
        flat_new = np.where(inside, new[..., 0] * w + new[..., 1], cells[:, None])
        blocked = ~inside | self.wall.reshape(-1)[flat_new]
        self.move_cell = np.where(blocked, cells[:, None], flat_new)  # (H*W, 5) cell after a move
        self.move_pos = self.cell_pos[self.move_cell]  # (H*W, 5, 2) position after a move
        self._move_cell_flat = self.move_cell.reshape(-1)  # index cell * 5 + action
        self._wall_flat = self.wall.reshape(1, -1)
        self.obs_dim = config.obs_dim
        self._ids = np.arange(config.n_agents)
        self._cell_weights = np.array([w, 1], dtype=np.int64)
        self._template: np.ndarray | None = None  # built by the first full-observability observations call

    def _full_template(self) -> np.ndarray:
        """(N, obs_dim) what every observation holds under full observability before the gems,
        agent rows and goal are written: every cell visible, walls, every agent visible, is_self."""
        if self._template is None:
            cfg, n = self.config, self.config.n_agents
            full = np.zeros((cfg.height, cfg.width, 2 + cfg.n_colors), dtype=np.float32)
            full[..., 0] = 1.0
            full[..., 1] = self.wall
            template = np.zeros((n, self.obs_dim), dtype=np.float32)
            template[:, : full.size] = full.reshape(-1)
            rows = template[:, full.size: full.size + n * AGENT_COLUMNS].reshape(n, n, AGENT_COLUMNS)
            rows[..., 0] = 1.0
            rows[self._ids, self._ids, 4] = 1.0
            self._template = template
        return self._template

    # --- reset and step -------------------------------------------------------------------------

    def reset(self, batch_size: int, rng: np.random.Generator, valued: np.ndarray | None = None) -> WorldState:
        """Agents and gems on distinct random free cells; ``valued`` (B, N) colour indices."""
        cfg = self.config
        n, g = cfg.n_agents, cfg.n_gems
        order = np.argsort(rng.random((batch_size, self.free_cells.size)), axis=1)  # (B, F)
        cells = self.free_cells[order[:, : n + g]]  # (B, N + G)
        pos = np.stack(np.divmod(cells, cfg.width), axis=-1)  # (B, N + G, 2)
        if valued is None:
            valued = np.full((batch_size, n), ANY_COLOR, dtype=np.int64)
        valued = np.broadcast_to(np.asarray(valued, dtype=np.int64), (batch_size, n)).copy()
        return WorldState(
            agent_pos=pos[:, :n].copy(),
            gem_pos=pos[:, n:].copy(),
            gem_color=self.gem_color.copy(),
            last_action=np.full((batch_size, n), NO_ACTION, dtype=np.int64),
            valued=valued,
            collected=np.zeros((batch_size, n, cfg.n_colors), dtype=np.int64),
            t=0,
        )

    def cells(self, pos: np.ndarray, scale: int = 1) -> np.ndarray:
        """(..., 2) row, col positions -> (...) flat cell indices times ``scale``, int64."""
        if pos.size <= 4096:  # small: one integer dot product beats three ufunc calls
            return np.dot(pos, self._cell_weights * scale)
        return pos[..., 0] * (self.config.width * scale) + pos[..., 1] * scale

    def recorded_state(self, agent_pos: np.ndarray, gem_pos: np.ndarray, last_action: np.ndarray,
                       valued: np.ndarray | None = None, t: int = 0) -> WorldState:
        """A ``WorldState`` of B worlds from recorded arrays, the way episodes and datasets store
        them: positions (B, N, 2) and (B, G, 2), last actions (B, N) (NO_ACTION before the first
        step), valued colours (B, N) (default: any). Collected counts are not recorded (zeros)."""
        agent_pos = np.asarray(agent_pos, dtype=np.int64)
        b, n = agent_pos.shape[:2]
        if valued is None:
            valued = np.full((b, n), ANY_COLOR, dtype=np.int64)
        return WorldState(
            agent_pos=agent_pos, gem_pos=np.asarray(gem_pos, dtype=np.int64), gem_color=self.gem_color.copy(),
            last_action=np.asarray(last_action, dtype=np.int64),
            valued=np.broadcast_to(np.asarray(valued, dtype=np.int64), (b, n)).copy(),
            collected=np.zeros((b, n, self.config.n_colors), np.int64), t=t,
        )

    def move_targets(self, pos: np.ndarray) -> np.ndarray:
        """(..., 2) positions -> (..., 5, 2) positions after each action; walls block a move."""
        return self.move_pos[self.cells(pos)]

    def step(self, state: WorldState, actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Advance every world one step in place; returns rewards (B, N) float32.

        Moves are simultaneous; agents may share a cell. A gem entered by several agents goes to
        the contender whose (id - t) mod N is smallest, so priority rotates fairly with time.
        """
        actions = np.asarray(actions, dtype=np.int64)
        if actions.shape != state.last_action.shape:
            raise ValueError(f"actions must have shape {state.last_action.shape}, got {actions.shape}")
        if actions.size and (actions.min() < 0 or actions.max() >= N_ACTIONS):
            raise ValueError(f"actions must be integers in 0..{N_ACTIONS - 1}")
        return self.step_unchecked(state, actions, rng)

    def step_unchecked(self, state: WorldState, actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``step`` for callers that already hold valid (B, N) int64 actions in 0..4."""
        cfg = self.config
        b, n = state.last_action.shape
        cell = self.cells(state.agent_pos)  # (B, N)
        agent_cell = self._move_cell_flat[cell * N_ACTIONS + actions]  # (B, N) after the move
        state.agent_pos = self.cell_pos[agent_cell]
        state.last_action = actions.copy()

        gem_cell = self.cells(state.gem_pos)  # (B, G)
        rows = np.arange(b)[:, None]
        occupied = np.zeros((b, cfg.height * cfg.width), dtype=bool)
        occupied[rows, agent_cell] = True
        taken = occupied[rows, gem_cell]  # (B, G) some agent ended on the gem
        rewards = np.zeros((b, n), dtype=np.float32)
        if taken.any():
            wb, wg = np.nonzero(taken)
            on = agent_cell[wb] == gem_cell[wb, wg][:, None]  # (M, N) contenders of each taken gem
            priority = (self._ids - state.t) % n  # (N,)
            wa = np.where(on, priority, n).argmin(axis=1)  # (M,)
            color = state.gem_color[wg]
            np.add.at(state.collected, (wb, wa, color), 1)
            valued = state.valued[wb, wa]
            np.add.at(rewards, (wb, wa), ((valued == ANY_COLOR) | (valued == color)).astype(np.float32))
            occupied[rows, gem_cell] = True
            occupied |= self._wall_flat
            self._respawn(state, taken, wb, wg, occupied, rng)
        state.t += 1
        return rewards

    def _respawn(self, state, taken, wb, wg, occupied, rng) -> None:
        """Move each taken gem to a distinct random cell holding no wall, agent or gem.

        Every world draws one uniform per cell; the k-th taken gem of a world (in gem order) goes
        to the free cell with the k-th largest draw (ties to the lower cell index).
        """
        score = np.where(occupied, -1.0, rng.random(occupied.shape))  # (B, H*W)
        if score.shape[0] == 1:  # one world: its taken gems, in order, get the best free cells
            order = np.argsort(-score[0], kind="stable")[: wg.size]
            state.gem_pos[0, wg] = self.cell_pos[order]
            return
        hit = np.flatnonzero(taken.any(axis=1))  # worlds with a taken gem
        sub = score[hit]  # (R, H*W)
        rank = np.cumsum(taken, axis=1)[wb, wg] - 1  # which free cell each taken gem gets
        picks = np.empty((hit.size, int(rank.max()) + 1), dtype=np.int64)
        r = np.arange(hit.size)
        for k in range(picks.shape[1]):
            picks[:, k] = sub.argmax(axis=1)
            sub[r, picks[:, k]] = -np.inf
        where = np.searchsorted(hit, wb)
        state.gem_pos[wb, wg] = self.cell_pos[picks[where, rank]]

    # --- interventions --------------------------------------------------------------------------

    def apply_events(self, state: WorldState, events, worlds=None) -> list[WorldEvent]:
        """Apply, in order, every event of ``events`` (a checked schedule) whose step is ``state.t``,
        in place, to the worlds ``worlds`` (indices; default every world); returns those applied.

        A swap exchanges two gems' cells. A move puts a gem on its cell, which must hold no agent
        and no other gem at that moment (``ValueError`` naming the event's ``to`` otherwise).
        Events never draw random numbers, so a schedule changes nothing but the gems it names.
        """
        due = [ev for ev in events if ev.step == state.t]
        if not due:
            return []
        rows = np.arange(state.batch_size) if worlds is None else np.atleast_1d(np.asarray(worlds, dtype=np.int64))
        for ev in due:
            if ev.kind == "swap":
                a = state.gem_pos[rows, ev.gem].copy()
                state.gem_pos[rows, ev.gem] = state.gem_pos[rows, ev.other]
                state.gem_pos[rows, ev.other] = a
                continue
            to = np.asarray(ev.to, dtype=np.int64)
            others = np.delete(state.gem_pos[rows], ev.gem, axis=1)  # (R, G - 1, 2)
            gem_there = (others == to).all(-1).any(-1)
            agent_there = (state.agent_pos[rows] == to).all(-1).any(-1)
            if gem_there.any() or agent_there.any():
                what = "another gem" if gem_there.any() else "an agent"
                raise ValueError(f"events (move of gem {ev.gem} at step {ev.step}).to: cell ({ev.to[0]}, "
                                 f"{ev.to[1]}) holds {what} at step {state.t}; choose a free cell")
            state.gem_pos[rows, ev.gem] = to
        return due

    # --- what agents see ------------------------------------------------------------------------

    def visible(self, state: WorldState) -> tuple[np.ndarray, np.ndarray]:
        """(gem_vis (B, N, G), agent_vis (B, N, N)): what each agent sees (itself included)."""
        r = self.config.view_radius
        b, n = state.last_action.shape
        g = state.gem_pos.shape[1]
        if r is None:
            return np.ones((b, n, g), dtype=bool), np.ones((b, n, n), dtype=bool)
        me = state.agent_pos[:, :, None, :]  # (B, N, 1, 2)
        gem_vis = np.abs(state.gem_pos[:, None] - me).max(-1) <= r  # (B, N, G)
        agent_vis = np.abs(state.agent_pos[:, None] - me).max(-1) <= r  # (B, N, N)
        return gem_vis, agent_vis

    def observations(self, state: WorldState) -> np.ndarray:
        """(B, N, obs_dim) float32 flat observations; layout in the spec card."""
        cfg = self.config
        b, n = state.last_action.shape
        h, w, c = cfg.height, cfg.width, cfg.n_colors
        k = 2 + c
        dg, dt = h * w * k, n * AGENT_COLUMNS
        out = np.empty((b, n, self.obs_dim), dtype=np.float32)
        grid = out[..., :dg]  # (B, N, H*W*K) views into ``out``
        table = out[..., dg:dg + dt].reshape(b, n, n, AGENT_COLUMNS)
        goal = out[..., dg + dt:]
        rows = np.arange(b)[:, None]
        gem_flat = self.cells(state.gem_pos, k) + (2 + state.gem_color)  # (B, G)
        ids = self._ids
        if cfg.view_radius is None:
            out[...] = self._full_template()  # walls, every cell and agent visible, is_self, no goal
            out[rows, :, gem_flat] = 1.0  # every agent sees every gem
            table[..., 1:3] = state.agent_pos[:, None]
            table[..., 3] = state.last_action[:, None]
        else:
            gem_vis, agent_vis = self.visible(state)
            rr = np.arange(h)[None, None, :, None]
            cc = np.arange(w)[None, None, None, :]
            me = state.agent_pos
            cell_vis = (np.abs(rr - me[:, :, 0, None, None]) <= cfg.view_radius) & (
                np.abs(cc - me[:, :, 1, None, None]) <= cfg.view_radius
            )  # (B, N, H, W)
            g5 = grid.reshape(b, n, h, w, k)
            g5[..., 0] = cell_vis
            g5[..., 1] = cell_vis & self.wall
            g5[..., 2:] = 0.0
            bi, ni, gi = np.nonzero(gem_vis)
            grid[bi, ni, gem_flat[bi, gi]] = 1.0
            table[..., 0] = agent_vis
            pos = np.broadcast_to(state.agent_pos[:, None], (b, n, n, 2))
            table[..., 1:3] = np.where(agent_vis[..., None], pos, -1)
            table[..., 3] = np.where(agent_vis, state.last_action[:, None, :], NO_ACTION)
            table[..., 4] = 0.0
            table[:, ids, ids, 4] = 1.0
            goal[...] = 0.0
        idx = np.where(state.valued == ANY_COLOR, c, state.valued)
        goal[rows, ids, idx] = 1.0
        return out


def split_observation(obs: np.ndarray, config: WorldConfig) -> dict[str, np.ndarray]:
    """Flat observation(s) (..., obs_dim) -> named segments with their documented shapes."""
    lead = obs.shape[:-1]
    return {
        name: obs[..., off : off + int(np.prod(shape))].reshape(*lead, *shape)
        for name, (off, shape) in config.obs_layout.items()
    }
