"""Persona families beyond the trait basis: exact, vectorised probabilities and their state.

Trait personas are softmax functions of the relational features the model reads
(``envs/perception.py``). The families here are not: each depends on something those features do
not hold. Everything they read comes through ``envs/perception.py`` (situations, post-move cells,
the gem cells an agent sees, pickups). With ``after`` the cells an agent reaches by each of the 5
moves (walls block) and ``d`` the Manhattan distance between cells:

``Patrol(waypoints, noise)`` (place, phase)
    ``p(a) = (1 - noise) * [a in G] / |G| + noise / 5``, G the moves minimising
    ``d(after[a], waypoints[phase])``. Phase: the index of the next waypoint, advanced (cyclically)
    when the agent looks and stands on that waypoint.
``Collector(order, style)`` (inventory)
    ``softmax(beta * U)``, ``U(a) = -GEM_WEIGHT * d(after[a], nearest seen gem of order[phase])``
    (0 when it sees none). Phase: advanced (cyclically) when the agent collects a gem of the colour
    ``order[phase]`` (``perception.pickups``); other colours picked up on the way change nothing.
``Territorial(home, radius, style)`` (place)
    ``softmax(beta * U)``, ``U(a) = -GEM_WEIGHT * d(after[a], nearest seen gem within radius of
    home)`` when it sees such a gem (any colour), else ``-GEM_WEIGHT * d(after[a], home)``.
``Contrarian(target, noise)`` (a target's last move)
    target moved m: ``(1 - noise) * onehot(opposite(m)) + noise / 5`` (up <-> down,
    left <-> right); target stayed and seen: ``(1 - noise)`` spread uniformly over the moves
    maximising the distance to the target, plus ``noise / 5``; otherwise (no move seen yet, or the
    target unseen) uniform.
``Explorer(memory, style)`` (own history)
    ``softmax(beta * [after[a] not on its trail])``, its trail the last ``memory`` cells it stood
    on (the current one first), pushed when it looks; as offsets from its newest cell, so that in
    another agent's situation it avoids the same shape of path laid from where that agent stands.

A persona's state is ``FamilyState`` (phase and recent cells), changed only by ``look``, which a
cast calls as the agent looks at the world before acting (the pure-policy habit: state in, state
out). The counterfactual "what would persona k do in agent i's situation?" evaluates k's
parameters and k's state with i's situation, post-move cells and gem sightings. A persona that
is only *described* to agent i (a DESCRIBE prompt, ``DescribedFamilies``) has no state of its own:
it gets the state it would have had living i's own history so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from mirrorhall.agents.personas import (
    FAMILIES,
    GEM_WEIGHT,
    Collector,
    Contrarian,
    Explorer,
    Patrol,
    Territorial,
)
from mirrorhall.envs.core import N_ACTIONS, NO_ACTION, WorldConfig, WorldCore, WorldState
from mirrorhall.envs.perception import (
    Situations,
    cell_distances,
    pickups,
    post_move_cells,
    seen_gem_cells,
)

PATROL, COLLECTOR, TERRITORIAL, CONTRARIAN, EXPLORER = 6, 7, 8, 9, 10
"""Kind codes of the families (after the cast's codes 0..5 for today's personas)."""
FAMILY_CODE = dict(zip(FAMILIES, (PATROL, COLLECTOR, TERRITORIAL, CONTRARIAN, EXPLORER), strict=True))
NOT_FAMILY = -1
OPPOSITE = np.array([0, 2, 1, 4, 3])
"""stay, up, down, left, right -> stay, down, up, right, left."""


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


# --- the kernels: exact probabilities, leading shape P (any), broadcast against each other ---------


def patrol_probs(config: WorldConfig, after: np.ndarray, goal: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """(P..., 5) patrols at post-move cells ``after`` (P..., 5) heading for cell ``goal`` (P...)."""
    d = cell_distances(config)[after, np.asarray(goal)[..., None]]  # (P..., 5)
    good = d == d.min(-1, keepdims=True)
    noise = np.asarray(noise, dtype=np.float64)[..., None]
    return (1 - noise) * good / good.sum(-1, keepdims=True) + noise / N_ACTIONS


def collector_probs(gem_d: np.ndarray, gem_seen: np.ndarray, want: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """(P..., 5) collectors wanting colour ``want`` (P...), from ``Situations.gem_d`` (P..., 5, C)
    and ``gem_seen`` (P..., C)."""
    want = np.asarray(want)
    d = np.take_along_axis(gem_d, want[..., None, None], axis=-1)[..., 0]  # (P..., 5)
    seen = np.take_along_axis(gem_seen, want[..., None], axis=-1)  # (P..., 1)
    u = np.where(seen, -GEM_WEIGHT * d, 0.0)
    return _softmax(np.asarray(beta, dtype=np.float64)[..., None] * u)


def territorial_probs(config: WorldConfig, after: np.ndarray, gem_cell: np.ndarray, home: np.ndarray,
                      radius: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """(P..., 5) territorial personas at post-move cells ``after`` (P..., 5) seeing gems at
    ``gem_cell`` (P..., G) (-1: unseen), with homes ``home`` (P...) and ``radius`` (P...)."""
    dist = cell_distances(config)
    home = np.asarray(home)
    g = np.maximum(gem_cell, 0)
    inside = (gem_cell >= 0) & (dist[home[..., None], g] <= np.asarray(radius)[..., None])  # (P..., G)
    d_gem = dist[after[..., :, None], g[..., None, :]]  # (P..., 5, G)
    near = np.where(inside[..., None, :], d_gem, config.width + config.height).min(-1)  # (P..., 5)
    d = np.where(inside.any(-1)[..., None], near, dist[after, home[..., None]]).astype(np.float64)
    return _softmax(np.asarray(beta, dtype=np.float64)[..., None] * (-GEM_WEIGHT * d))


def contrarian_probs(last: np.ndarray, seen: np.ndarray, d_target: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """(P..., 5) contrarians whose target's last action is ``last`` (P...) (NO_ACTION: none seen),
    seen now or not (``seen`` (P...)), at distances ``d_target`` (P..., 5) after each move."""
    last = np.asarray(last)
    moved = last > 0
    opposite = np.eye(N_ACTIONS)[OPPOSITE[np.where(moved, last, 0)]]  # (P..., 5)
    far = (d_target == d_target.max(-1, keepdims=True)).astype(np.float64)
    away = far / far.sum(-1, keepdims=True)
    stayed = (last == 0) & np.asarray(seen)
    intent = np.where(moved[..., None], opposite, np.where(stayed[..., None], away, 1.0 / N_ACTIONS))
    noise = np.asarray(noise, dtype=np.float64)[..., None]
    return np.where((moved | stayed)[..., None], (1 - noise) * intent + noise / N_ACTIONS, 1.0 / N_ACTIONS)


def explorer_probs(config: WorldConfig, after: np.ndarray, recent: np.ndarray, memory: np.ndarray,
                   beta: np.ndarray) -> np.ndarray:
    """(P..., 5) explorers at post-move cells ``after`` (P..., 5) (``after[..., 0]``, stay, is where
    the situation's agent stands) with recent cells ``recent`` (P..., M) (newest first, -1 empty),
    of which they avoid the first ``memory`` (P...). The trail is carried as offsets from the
    newest cell, so in its own situation an explorer avoids the cells it stood on, and in another
    agent's situation the same shape of path laid from where that agent stands."""
    m = recent.shape[-1]
    width = config.width
    window = (np.arange(m) < np.asarray(memory)[..., None]) & (recent >= 0)  # (P..., M)
    rows, cols = np.divmod(np.maximum(recent, 0), width)  # (P..., M)
    trail_r, trail_c = rows - rows[..., :1], cols - cols[..., :1]  # offsets from the newest cell
    here_r, here_c = np.divmod(after[..., :1], width)  # (P..., 1)
    move_r, move_c = np.divmod(after, width)  # (P..., 5)
    back = ((move_r - here_r)[..., :, None] == trail_r[..., None, :]) \
        & ((move_c - here_c)[..., :, None] == trail_c[..., None, :])  # (P..., 5, M)
    visited = (back & window[..., None, :]).any(-1)  # (P..., 5)
    return _softmax(np.asarray(beta, dtype=np.float64)[..., None] * (~visited).astype(np.float64))


# --- parameters and state ---------------------------------------------------------------------


def _take(obj, index):
    return type(obj)(**{f.name: getattr(obj, f.name)[index] for f in fields(obj)})


@dataclass
class FamilyParams:
    """Family persona parameters with a common leading shape P (a cast's (B, N), a hypothesis set's
    (H,), or any gathered shape). Rows that are not family personas have kind NOT_FAMILY."""

    kind: np.ndarray  # (P...) int64 family code or NOT_FAMILY
    route: np.ndarray  # (P..., R) int64 patrol waypoints as flat cells, -1 padding
    order: np.ndarray  # (P..., R) int64 collector colours, -1 padding
    length: np.ndarray  # (P...) int64 number of waypoints or colours (1 otherwise)
    home: np.ndarray  # (P...) int64 territorial home, flat cell
    radius: np.ndarray  # (P...) int64 territorial radius
    beta: np.ndarray  # (P...) float64 inverse temperature (collector, territorial, explorer)
    noise: np.ndarray  # (P...) float64 noise (patrol, contrarian)
    target: np.ndarray  # (P...) int64 contrarian target, -1 otherwise
    memory: np.ndarray  # (P...) int64 explorer memory

    def __getitem__(self, index) -> FamilyParams:
        return _take(self, index)

    def reshape(self, *shape: int) -> FamilyParams:
        return FamilyParams(**{f.name: (lambda x: x.reshape(*shape, *x.shape[self.kind.ndim:]))(getattr(self, f.name))
                               for f in fields(self)})

    @property
    def any(self) -> bool:
        return bool((self.kind != NOT_FAMILY).any())

    @property
    def max_memory(self) -> int:
        mem = self.memory[self.kind == EXPLORER]
        return int(mem.max()) if mem.size else 1

    @classmethod
    def build(cls, specs: Sequence, config: WorldConfig, agents: Sequence[int] | None = None) -> FamilyParams:
        """(P,) parameters of ``specs`` (any personas; non-family ones get NOT_FAMILY) for a world,
        validated against it. ``agents[p]``: the agent spec p plays (a contrarian cannot target
        itself); None: not checked."""
        p = len(specs)
        r = max([len(s.waypoints) for s in specs if isinstance(s, Patrol)]
                + [len(s.order) for s in specs if isinstance(s, Collector)] + [1])
        out = cls(kind=np.full(p, NOT_FAMILY, np.int64), route=np.full((p, r), -1, np.int64),
                  order=np.full((p, r), -1, np.int64), length=np.ones(p, np.int64), home=np.zeros(p, np.int64),
                  radius=np.zeros(p, np.int64), beta=np.ones(p), noise=np.zeros(p),
                  target=np.full(p, -1, np.int64), memory=np.ones(p, np.int64))
        walls = config.walls()
        colors = config.color_names

        def floor(cell, what, who):
            rr, cc = cell
            if not (0 <= rr < config.height and 0 <= cc < config.width) or walls[rr, cc]:
                raise ValueError(f"{who}: {what} ({rr}, {cc}) is not a floor cell of this "
                                 f"{config.width}x{config.height} world (rows and columns 1..{config.height - 2}, "
                                 f"1..{config.width - 2}, no wall); choose a cell inside the grid")
            return rr * config.width + cc

        for q, spec in enumerate(specs):
            if getattr(spec, "kind", None) not in FAMILY_CODE:
                continue
            who = f"agent_{agents[q]}" if agents is not None else f"persona {q}"
            out.kind[q] = FAMILY_CODE[spec.kind]
            if isinstance(spec, Patrol):
                out.route[q, :len(spec.waypoints)] = [floor(c, "waypoint", who) for c in spec.waypoints]
                out.length[q], out.noise[q] = len(spec.waypoints), spec.noise
            elif isinstance(spec, Collector):
                for c in spec.order:
                    if c not in colors:
                        raise ValueError(f"{who}: collector colour {c!r} is not in this world "
                                         f"({', '.join(colors)}); choose among them")
                out.order[q, :len(spec.order)] = [colors.index(c) for c in spec.order]
                out.length[q], out.beta[q] = len(spec.order), spec.beta
            elif isinstance(spec, Territorial):
                out.home[q] = floor(spec.home, "home", who)
                out.radius[q], out.beta[q] = spec.radius, spec.beta
            elif isinstance(spec, Contrarian):
                if spec.target >= config.n_agents:
                    raise ValueError(f"{who} targets agent {spec.target}, which does not exist "
                                     f"(agents 0..{config.n_agents - 1})")
                if agents is not None and spec.target == agents[q]:
                    raise ValueError(f"{who} cannot contradict itself; choose another target")
                out.target[q], out.noise[q] = spec.target, spec.noise
            elif isinstance(spec, Explorer):
                out.memory[q], out.beta[q] = spec.memory, spec.beta
        return out


@dataclass
class FamilyState:
    """The state of family personas, leading shape P: the phase (patrol: next waypoint; collector:
    next colour) and the recent cells (explorer), newest first."""

    phase: np.ndarray  # (P...) int64
    recent: np.ndarray  # (P..., M) int64 flat cells, -1 empty

    def __getitem__(self, index) -> FamilyState:
        return _take(self, index)

    def copy(self) -> FamilyState:
        return FamilyState(self.phase.copy(), self.recent.copy())

    @classmethod
    def initial(cls, shape: tuple[int, ...], memory: int) -> FamilyState:
        """Before the first look: phase 0, no recent cells (M = ``memory``)."""
        return cls(np.zeros(shape, np.int64), np.full((*shape, memory), -1, np.int64))


def look(params: FamilyParams, state: FamilyState, cell: np.ndarray, picked: np.ndarray | None) -> FamilyState:
    """The state after the persona looks at the world: it stands on ``cell`` (P...) and collected
    a gem of colour ``picked`` (P...) (-1: none) in the step just taken (None: no step yet).

    A patrol on its next waypoint and a collector that collected its wanted colour advance their
    phase; every persona pushes its cell into its recent cells (only explorers read them)."""
    at = np.take_along_axis(params.route, state.phase[..., None], axis=-1)[..., 0]  # (P...)
    advance = (params.kind == PATROL) & (at == cell)
    if picked is not None:
        want = np.take_along_axis(params.order, state.phase[..., None], axis=-1)[..., 0]
        advance |= (params.kind == COLLECTOR) & (picked == want) & (picked >= 0)
    phase = np.where(advance, (state.phase + 1) % params.length, state.phase)
    recent = np.concatenate([np.broadcast_to(cell, phase.shape)[..., None], state.recent[..., :-1]], axis=-1)
    return FamilyState(phase, recent)


def family_probs(params: FamilyParams, state: FamilyState, sit: Situations, after: np.ndarray,
                 gem_cell: np.ndarray, config: WorldConfig, out: np.ndarray | None = None) -> np.ndarray:
    """(P..., 5) exact probabilities of family personas ``params`` with states ``state``, in
    situations ``sit`` with post-move cells ``after`` (P..., 5) and gem sightings ``gem_cell``
    (P..., G). All share the leading shape P (element p: persona p in situation p, which need not
    be its own). Rows that are not family personas are left as in ``out`` (uniform when None).

    One vectorised evaluation per family present: no loop over agents."""
    lead = params.kind.shape
    out = np.full((*lead, N_ACTIONS), 1.0 / N_ACTIONS) if out is None else out
    for code in (PATROL, COLLECTOR, TERRITORIAL, CONTRARIAN, EXPLORER):
        sel = params.kind == code
        if not sel.any():
            continue
        idx = np.nonzero(sel)
        p, s = params[idx], state[idx]
        if code == PATROL:
            goal = np.take_along_axis(p.route, s.phase[:, None], axis=-1)[:, 0]
            out[idx] = patrol_probs(config, after[idx], goal, p.noise)
        elif code == COLLECTOR:
            want = np.take_along_axis(p.order, s.phase[:, None], axis=-1)[:, 0]
            out[idx] = collector_probs(sit.gem_d[idx], sit.gem_seen[idx], want, p.beta)
        elif code == TERRITORIAL:
            out[idx] = territorial_probs(config, after[idx], gem_cell[idx], p.home, p.radius, p.beta)
        elif code == CONTRARIAN:
            rows = np.arange(p.target.size)
            last = sit.last_action[idx][rows, p.target]
            seen = sit.agent_seen[idx][rows, p.target]
            d = sit.agent_d[idx][rows, :, p.target]  # (M, 5)
            out[idx] = contrarian_probs(np.where(last == NO_ACTION, NO_ACTION, last), seen, d, p.noise)
        else:
            out[idx] = explorer_probs(config, after[idx], s.recent, p.memory, p.beta)
    return out


# --- described personas: a family persona told to an agent ------------------------------------


class DescribedFamilies:
    """Family personas ``specs`` (F of them) described to every agent of B worlds, as DESCRIBE
    prompts name them ("behave as a patrolling agent that walks the loop ...").

    A described persona acts in agent i's situation with the state it would have had if it had
    lived i's own history so far: ``look`` on i's cell at every step and on the gem i collected in
    the step before, from the first step, exactly as the persona takes in its own (a collector has
    collected what i collected, a patrol has reached the waypoints i stood on, in order, an explorer
    avoids the cells i stood on). So the description of i's own persona, told to i, is i's own
    policy. Call ``look`` at every step from t = 0 (before the agents act), then ``probs``.
    """

    def __init__(self, specs: Sequence, config: WorldConfig, b: int):
        n, f = config.n_agents, len(specs)
        self.config, self.core = config, WorldCore(config)
        self.params = FamilyParams.build(specs, config)  # (F,)
        if not (self.params.kind != NOT_FAMILY).all():
            raise ValueError("described personas must all be personas of a family")
        self.lived = self.params[np.broadcast_to(np.arange(f), (b, n, f))]  # (B, N, F) persona f lived by agent i
        self.state = FamilyState.initial((b, n, f), self.params.max_memory)  # (B, N, F)
        self.gems_before = None  # (B, G, 2) the gems when the agents last looked

    def look(self, world: WorldState, t: int) -> None:
        """Every described persona takes in agent i's cell in ``world`` (step ``t``) and the gem i
        collected in the step just taken, for every agent i at once."""
        cell = self.core.cells(world.agent_pos)[..., None]  # (B, N, 1)
        picked = None
        if self.gems_before is not None:
            picked = pickups(self.core, self.gems_before, world.agent_pos, t - 1)[..., None]  # (B, N, 1)
        self.state = look(self.lived, self.state, cell, picked)
        self.gems_before = world.gem_pos.copy()

    def probs(self, f: np.ndarray, w: np.ndarray, i: np.ndarray, sit: Situations, world: WorldState) -> np.ndarray:
        """(S, 5) described persona ``f[s]`` with its state in agent ``i[s]``'s situation of world
        ``w[s]``; ``sit`` (B, N) the situations of ``world``, the step last looked at."""
        after = post_move_cells(self.core, world)[w, i]  # (S, 5)
        gem_cell = seen_gem_cells(self.core, world)[w, i]  # (S, G)
        return family_probs(self.params[f], self.state[(w, i, f)], sit.take((w, i)), after, gem_cell, self.config)


# --- the parameter grids: each family's finite hypothesis set ----------------------------------

GRID_NOISES = (0.1, 0.3)
GRID_STYLES = ("focused", "casual")
GRID_RADII = (2, 4)
GRID_MEMORIES = (1, 3, 8)
GRID_EXPLORER_STYLES = ("focused", "erratic")


def _corners(config: WorldConfig) -> tuple[int, int, int, int]:
    inset = 2 if min(config.height, config.width) >= 7 else 1
    r0, r1, c0, c1 = inset, config.height - 1 - inset, inset, config.width - 1 - inset
    if r0 >= r1 or c0 >= c1:
        raise ValueError(f"patrol and territorial personas need a grid of at least 5x5 cells; this world "
                         f"is {config.width}x{config.height}")
    return r0, r1, c0, c1


def family_grid(family: str, config: WorldConfig, agent: int | None = None) -> list:
    """Every persona of ``family`` in a world: the family's parameter grid, its hypothesis set.

    patrol: the loop through the four corners of the grid inset by 2 cells (1 below 7x7), either
    direction, starting at any corner, noise 0.1 or 0.3 (16); collector: every ordered pair of
    distinct colours, focused or casual (2 x C x (C - 1)); territorial: a home at each quadrant's
    centre or the grid's centre, radius 2 or 4, focused (10); contrarian: every target but
    ``agent`` itself, noise 0.1 or 0.3; explorer: memory 1, 3 or 8, focused or erratic (6).
    Cells on interior walls are left out."""
    if family not in FAMILY_CODE:
        raise ValueError(f"unknown persona family {family!r}; allowed: {', '.join(FAMILIES)}")
    walls = config.walls()
    if family == "patrol":
        r0, r1, c0, c1 = _corners(config)
        loop = [(r0, c0), (r0, c1), (r1, c1), (r1, c0)]
        if any(walls[c] for c in loop):
            raise ValueError("patrol personas: a corner of the patrol loop is an interior wall of this world")
        loops = [tuple(way[s:] + way[:s]) for way in (loop, loop[::-1]) for s in range(4)]
        return [Patrol(w, n) for w in loops for n in GRID_NOISES]
    if family == "collector":
        colors = config.color_names
        if len(colors) < 2:
            raise ValueError("collector personas need a world of at least 2 colours")
        return [Collector((a, b), st) for a in colors for b in colors if a != b for st in GRID_STYLES]
    if family == "territorial":
        r0, r1, c0, c1 = _corners(config)
        rows, cols = (r0 + r1) // 2, (c0 + c1) // 2
        qr, qc = ((r0 + rows) // 2, (rows + r1 + 1) // 2), ((c0 + cols) // 2, (cols + c1 + 1) // 2)
        homes = [(r, c) for r in qr for c in qc] + [(rows, cols)]
        homes = [h for h in dict.fromkeys(homes) if not walls[h]]
        return [Territorial(h, rad, "focused") for h in homes for rad in GRID_RADII]
    if family == "contrarian":
        if config.n_agents < 2:
            raise ValueError("contrarian personas need a world of at least 2 agents")
        return [Contrarian(k, n) for k in range(config.n_agents) if k != agent for n in GRID_NOISES]
    return [Explorer(m, st) for m in GRID_MEMORIES for st in GRID_EXPLORER_STYLES]
