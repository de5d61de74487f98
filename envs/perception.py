"""Perception: what every agent sees, in one encoding, from the world state or its own observation.

This module owns the seam between the world and everything that reads it (scripted personas,
labelling, the model, probes, RLlib modules). There is one view of the world per observer and two
ways to get it:

- from the true world state restricted to what each agent sees (``WorldCore.visible``): the fast,
  batched path that scenes, labelling and training use;
- from an agent's own flat PettingZoo observation (``decode``): the path of an agent that has
  nothing but its observation (RLlib modules, a model driving an agent of a plain ``parallel_env``).

Both give bit-identical results (tested on scenes with full and partial view, walls, 5-64 agents).
What is read from a view, all of it exact and action-relative (Manhattan distances from the
position after each of the 5 moves, walls blocking):

``Situations`` (``situations``, ``view_situations``)
    the ego's own situation, the input of scripted personas: distances to the nearest visible gem
    of each colour, to every seen agent and to the nearest one, and the last actions seen.
Relational features (``entity_features``, ``view_features``)
    the input of the model: for observer i, entity j (any agent i sees, itself included) and each
    move a, what a would do for j, judged from i's view only; ``n_features(C)`` columns:

        [ d_c(a) - d_c(stay) for each colour c ]  change of j's distance to the nearest gem of c
                                                  that i can see (0 if i sees none of c)
        [ seen_c for each colour c ]              i sees a gem of colour c
        d_near(a) - d_near(stay)                  change of j's distance to the nearest other
                                                  agent i sees
        d_i(a) - d_i(stay)                        change of j's distance to the observer i (0 for j = i)
        blocked(a)                                the move runs into a wall
        [ row(a) == r for each row r ]            with ``place``: the row and the column of j's
        [ col(a) == c for each column c ]         cell after a, one-hot (H + W columns)
        [ b_c(a) - b_c(stay) for each colour c ]  with ``belief`` (the perspective columns): the
        [ believes_c for each colour c ]          gem columns again, read from where i saw j last
                                                  see a gem of each colour (``look``), not from
                                                  where the gems are
        [ picked_c for each colour c ]            with ``before`` (the pickup columns): i saw a
                                                  gem of colour c, one step ago, on the cell
                                                  where j stands now: j has just collected it

    Rows of entities i does not see are all zero, so the features are a function of i's own
    observation. Trait personas are softmax functions of exactly such differences, so these
    features let a model read behaviour without first learning to see; no persona, trait or label
    ever enters them. The place columns (``place=True``) say where each move leads: a policy that
    heads for a cell (a patrol's waypoint, a territorial persona's home) has a utility linear in
    them, -|row(a) - r*| - |col(a) - c*|. The perspective columns are what an agent that acts on
    its memory (a believer whose gem moved while it looked away) heads by. They and the
    pickup columns are the columns with history, which the caller carries from step to step. The
    perspective columns read ``look`` and ``view_look`` one step at a time (``look_history`` for a
    recorded episode at once); the pickup columns read what i saw of the gems one step before
    (``gem_sightings``, ``view_gem_sightings``; ``unseen_gems`` before the first look): what a
    persona whose wants change with what it collects (a collector) heads by next. They are the
    same for every move. Two agents entering one gem's cell at once
    both read as collecting it (the world gives it to one of them).
Cells (``post_move_cells``, ``seen_gem_cells``, ``pickups``; ``view_post_move_cells``,
``view_gem_cells``)
    where the ego ends after each move, the cells of the gems it sees, and which colour each agent
    collected in the last step: what persona families read (``agents/families.py``). Trait
    personas and the model's features do not depend on them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mirrorhall.envs.core import (
    N_ACTIONS,
    NO_ACTION,
    WorldConfig,
    WorldCore,
    WorldState,
    split_observation,
)


def ego_column(n_colors: int) -> int:
    """Index of the distance-to-observer column of the relational features."""
    return 2 * n_colors + 1


def n_features(n_colors: int, place: tuple[int, ...] = (), perspective: bool = False,
               pickups: bool = False) -> int:
    """Columns of the relational features for worlds of ``n_colors`` colours, with the place
    columns of a (height, width) grid when ``place`` names one, the perspective columns and the
    pickup columns."""
    return 2 * n_colors + 3 + sum(place) + 2 * n_colors * bool(perspective) + n_colors * bool(pickups)


def place_of(config: WorldConfig, place: bool) -> tuple[int, ...]:
    """The (height, width) the place columns of this world span, or () without them."""
    return (config.height, config.width) if place else ()


class Situations:
    """What each ego agent's observation says, as exact action-relative distances.

    Leading shape S is (B, N) for every agent in its own situation, or any gathered shape.
    Distances are Manhattan distances from the ego's position after each of the 5 moves.

    ``agent_d`` may be given as a function of no arguments: it is then computed when the property
    is first read (most personas need only ``agent_near``), and ``take`` stays lazy.
    """

    FIELDS = ("gem_d", "gem_seen", "agent_d", "agent_seen", "last_action", "ego", "agent_near")

    def __init__(self, gem_d: np.ndarray, gem_seen: np.ndarray, agent_d: np.ndarray | Callable[[], np.ndarray],
                 agent_seen: np.ndarray, last_action: np.ndarray, ego: np.ndarray, agent_near: np.ndarray):
        self.gem_d = gem_d  # (S..., 5, C) distance to the nearest visible gem of each colour
        self.gem_seen = gem_seen  # (S..., C) bool: some gem of that colour is visible
        # (S..., 5, N) distance to each agent's current position, or a _Once computing it
        self._agent_d = _Once(agent_d) if callable(agent_d) and not isinstance(agent_d, _Once) else agent_d
        self.agent_seen = agent_seen  # (S..., N) bool: that agent is visible and is not the ego
        self.last_action = last_action  # (S..., N) int64 last action of each agent seen, NO_ACTION if unseen
        self.ego = ego  # (S...) int64 id of the ego agent
        self.agent_near = agent_near  # (S..., 5) distance to the nearest seen other agent, 0 if none

    @property
    def agent_d(self) -> np.ndarray:
        """(S..., 5, N) distance from each post-move cell to each seen agent (0 where unseen)."""
        if isinstance(self._agent_d, _Once):
            self._agent_d = self._agent_d()
        return self._agent_d

    @property
    def agent_d_is_computed(self) -> bool:
        return not isinstance(self._agent_d, _Once)

    def agent_d_getter(self) -> Callable[[], np.ndarray]:
        """A function returning ``agent_d``, computing it only when called (once, shared with
        this object); it holds no reference to the situations object itself."""
        lazy = self._agent_d
        if isinstance(lazy, _Once):
            return lazy
        return lambda: lazy

    def __getstate__(self):  # pickling (processes, Ray) sends the array, not the function
        return {name: getattr(self, name) for name in self.FIELDS}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def __eq__(self, other) -> bool:
        return isinstance(other, Situations) and all(
            np.array_equal(getattr(self, f), getattr(other, f)) for f in self.FIELDS)

    __hash__ = None

    def take(self, index) -> Situations:
        """Select along the leading axes with numpy indexing (a lazy ``agent_d`` stays lazy)."""
        parts = {f: getattr(self, f)[index] for f in self.FIELDS if f != "agent_d"}
        lazy = self._agent_d
        if isinstance(lazy, _Once):
            return Situations(agent_d=lambda: lazy()[index], **parts)
        return Situations(agent_d=lazy[index], **parts)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.ego.shape


class _Once:
    """A function of no arguments whose result is computed on the first call and kept."""

    __slots__ = ("_fn", "_value")

    def __init__(self, fn: Callable[[], np.ndarray]):
        self._fn, self._value = fn, None

    def __call__(self) -> np.ndarray:
        if self._fn is not None:
            self._value, self._fn = self._fn(), None
        return self._value


def nearest_seen(agent_d: np.ndarray, agent_seen: np.ndarray) -> np.ndarray:
    """(S..., 5) ``Situations.agent_near`` from agent_d (S..., 5, N) and agent_seen (S..., N)."""
    near = np.where(agent_seen[..., None, :], agent_d, np.inf).min(-1)
    return np.where(np.isfinite(near), near, 0.0)


def _fold_last(x: np.ndarray, op: np.ufunc = np.minimum) -> np.ndarray:
    """``op.reduce(x, axis=-1)`` by pairwise folding, much faster than numpy's reduction over a
    short last axis. Only for exact, order-free operations (integer min, boolean or)."""
    if x.size <= 4096:  # small: one reduction call is cheaper than several folds
        return op.reduce(x, axis=-1)
    while x.shape[-1] > 1:
        size = x.shape[-1]
        even = size - size % 2
        y = op(x[..., 0:even:2], x[..., 1:even:2])
        if size % 2:
            op(y[..., :1], x[..., even:], out=y[..., :1])
        x = y
    return x[..., 0]



# --- the ego's own situation, from the world state ---------------------------------------------


def situations(core: WorldCore, state: WorldState) -> Situations:
    """Every agent's own situation, (B, N) leading shape.

    Distances are computed in a small integer type (exact: they are below width + height)
    and converted to float64 once; ``agent_near`` is folded from the same integers, and the
    full (B, N, 5, N) ``agent_d``, which only follow personas and counterfactual queries read,
    is converted when first read.
    """
    cfg = core.config
    b, n = state.last_action.shape
    gem_vis, agent_vis = core.visible(state)
    big = cfg.width + cfg.height
    cell = core.cells(state.agent_pos)  # (B, N)
    agent_seen = agent_vis & ~np.eye(n, dtype=bool)  # (B, N, N)
    gem_seen = _fold_last(gem_vis.reshape(b, n, cfg.n_colors, cfg.gems_per_color), np.logical_or)  # (B, N, C)
    if b * n * n <= 4096 and core.cell_pos.shape[0] <= 1024:
        gem_d, near, agent_d = _near_by_table(core, state, cell, gem_vis, agent_seen)
    else:
        gem_d, near, agent_d = _near_by_coordinates(core, state, cell, gem_vis, agent_seen)
    gem_d = np.multiply(gem_d, gem_seen[:, :, None, :], dtype=np.float64, order="C")  # 0 where unseen
    near = np.multiply(near, near < big, dtype=np.float64)  # 0.0 when no other agent is seen
    last = np.where(agent_vis, state.last_action[:, None, :], NO_ACTION)  # (B, N, N)
    ego = np.broadcast_to(np.arange(n), (b, n)).copy()
    return Situations(gem_d=gem_d, gem_seen=gem_seen, agent_d=agent_d, agent_seen=agent_seen,
                      last_action=last, ego=ego, agent_near=near)

def _near_by_table(core: WorldCore, state: WorldState, cell, gem_vis, agent_seen):
    """Small batches and grids: gathers from the cell-to-cell distance table, in the layout
    of ``Situations``. Returns (gem distance per colour (B, N, 5, C) in the distance type,
    nearest seen agent (B, N, 5), >= width + height when none is seen, agent_d float64)."""
    cfg = core.config
    b, n = cell.shape
    dt = _dist_dtype(cfg)
    big = dt(cfg.width + cfg.height)
    after = core.move_cell[cell][..., None]  # (B, N, 5, 1) flat cells
    dist = _distances(cfg.height, cfg.width, dt)
    d_gem = dist[after, core.cells(state.gem_pos)[:, None, None, :]]  # (B, N, 5, G)
    if cfg.view_radius is not None:
        d_gem = np.where(gem_vis[:, :, None, :], d_gem, big)
    per_color = _fold_last(d_gem.reshape(b, n, N_ACTIONS, cfg.n_colors, cfg.gems_per_color))
    d = dist[after, cell[:, None, None, :]]  # (B, N, 5, N) post-move cell to each agent
    # ``big`` added for agents not seen (the ego itself included): the nearest seen agent is a
    # plain minimum and agent_d a multiplication by the seen mask
    d += np.multiply(~agent_seen, big, dtype=dt)[:, :, None, :]
    agent_d = np.multiply(d, agent_seen[:, :, None, :], dtype=np.float64)  # unseen: +0.0
    return per_color, _fold_last(d), agent_d

def _near_by_coordinates(core: WorldCore, state: WorldState, cell, gem_vis, agent_seen):
    """Large batches: distances from coordinates, laid out target-major ((B, target, N * 5):
    numpy's inner loops then run over the N * 5 post-move cells of all egos, not over N
    targets), in int8 where the grid allows. Same returns as ``_near_by_table``, except that
    agent_d is a function computing it."""
    cfg = core.config
    b, n = cell.shape
    dt = _near_dtype(cfg)
    big = dt(cfg.width + cfg.height)
    after = core.move_pos[cell].astype(dt)  # (B, N, 5, 2)
    ar = after[..., 0].reshape(b, 1, n * N_ACTIONS)
    ac = after[..., 1].reshape(b, 1, n * N_ACTIONS)

    def spread(pos):  # (B, K, 2) positions -> (B, K, N * 5) distance from every post-move cell
        p = pos.astype(dt)
        d = np.subtract(p[..., 0, None], ar)
        np.abs(d, out=d)
        e = np.subtract(p[..., 1, None], ac)
        np.abs(e, out=e)
        d += e
        return d

    d_gem = spread(state.gem_pos)  # (B, G, N * 5)
    if cfg.view_radius is not None:
        unseen = np.repeat(~gem_vis.transpose(0, 2, 1), N_ACTIONS, axis=-1)  # (B, G, N * 5)
        d_gem[unseen] = big
    per_color = np.minimum.reduce(d_gem.reshape(b, cfg.n_colors, cfg.gems_per_color, n * N_ACTIONS), axis=2)
    per_color = per_color.reshape(b, cfg.n_colors, n, N_ACTIONS).transpose(0, 2, 3, 1)  # (B, N, 5, C)
    d = spread(state.agent_pos)  # (B, target, N * 5)
    d4 = d.reshape(b, n, n, N_ACTIONS)  # (B, target, ego, 5)
    if cfg.view_radius is None:  # only the ego itself is unseen
        d4[:, np.arange(n), np.arange(n)] += big
    else:
        d4 += np.multiply(~agent_seen.transpose(0, 2, 1), big, dtype=dt)[..., None]
    near = np.minimum.reduce(d, axis=1).reshape(b, n, N_ACTIONS)

    def agent_d() -> np.ndarray:
        out = np.empty((b, n, N_ACTIONS, n))
        np.multiply(d4.transpose(0, 2, 3, 1), agent_seen[:, :, None, :], out=out)  # unseen: +0.0
        return out

    return per_color, near, agent_d

@functools.lru_cache(maxsize=8)
def _distances(height: int, width: int, dtype) -> np.ndarray:
    """(H*W, H*W) Manhattan distance between flat cells, in ``dtype``; one table per grid size."""
    rows, cols = np.divmod(np.arange(height * width), width)
    rows, cols = rows.astype(dtype), cols.astype(dtype)
    table = (np.abs(rows[:, None] - rows[None, :]) + np.abs(cols[:, None] - cols[None, :])).astype(dtype)
    table.flags.writeable = False
    return table


def _dist_dtype(cfg: WorldConfig):
    """Distances (< width + height) plus the unseen offset width + height fit in this type exactly."""
    return np.int16 if 2 * (cfg.width + cfg.height) < 2**15 else np.int64


def _near_dtype(cfg: WorldConfig):
    return np.int8 if 2 * (cfg.width + cfg.height) < 2**7 else _dist_dtype(cfg)


# --- the relational features, from the world state -------------------------------------------


def _relational(core: WorldCore, pos: np.ndarray, gem_pos: np.ndarray, observers: np.ndarray,
                gem_vis: np.ndarray, agent_vis: np.ndarray, place: bool = False) -> np.ndarray:
    """(B, Ni, Nj, 5, F) float32 features of every agent j as observers ``observers`` (B, Ni) see
    it, given their visibility of gems (B, Ni, G) and agents (B, Ni, Nj). Entities an observer
    does not see get all-zero rows. ``pos`` (B, Nj, 2) and ``gem_pos`` (B, G, 2) may hold any
    placeholder where nothing is seen. ``place``: the one-hot row and column columns too."""
    cfg = core.config
    b, n = pos.shape[:2]
    ni = observers.shape[1]
    c, per = cfg.n_colors, cfg.gems_per_color
    rows = np.arange(b)[:, None]
    after = core.move_targets(pos)  # (B, Nj, 5, 2)

    d_gem = np.abs(after[:, :, :, None, :] - gem_pos[:, None, None]).sum(-1)  # (B, Nj, 5, G)
    big = cfg.width + cfg.height
    d_gem = np.where(gem_vis[:, :, None, None, :], d_gem[:, None], big)  # (B, Ni, Nj, 5, G)
    d_col = d_gem.reshape(b, ni, n, N_ACTIONS, c, per).min(-1)  # (B, Ni, Nj, 5, C)
    seen = gem_vis.reshape(b, ni, c, per).any(-1)  # (B, Ni, C)
    d_gem_delta = np.where(seen[:, :, None, None, :], d_col - d_col[:, :, :, :1], 0)

    d_agent = np.abs(after[:, :, :, None, :] - pos[:, None, None]).sum(-1)  # (B, Nj, 5, Nk)
    others = agent_vis[:, :, None, :] & ~np.eye(n, dtype=bool)[None, None]  # (B, Ni, Nj, Nk)
    near = np.where(others[:, :, :, None, :], d_agent[:, None], np.inf).min(-1)  # (B, Ni, Nj, 5)
    with np.errstate(invalid="ignore"):  # inf - inf where an observer sees no other agent; zeroed next
        near_delta = np.where(np.isfinite(near[..., :1]), near - near[..., :1], 0.0)
    near_delta = np.nan_to_num(near_delta, nan=0.0, posinf=0.0, neginf=0.0)

    to_obs = d_agent[rows, :, :, observers]  # (B, Ni, Nj, 5): from j's post-move cells to observer i
    is_self = observers[:, :, None] == np.arange(n)  # (B, Ni, Nj)
    ego_delta = np.where(is_self[..., None], 0, to_obs - to_obs[..., :1])

    blocked = (after == pos[:, :, None, :]).all(-1)  # (B, Nj, 5)
    blocked[:, :, 0] = False
    blocked = np.broadcast_to(blocked[:, None], (b, ni, n, N_ACTIONS))

    columns = [
        d_gem_delta.astype(np.float32),
        np.broadcast_to(seen[:, :, None, None, :], (b, ni, n, N_ACTIONS, c)).astype(np.float32),
        near_delta[..., None].astype(np.float32),
        ego_delta[..., None].astype(np.float32),
        blocked[..., None].astype(np.float32),
    ]
    if place:
        row = np.eye(cfg.height, dtype=np.float32)[after[..., 0]]  # (B, Nj, 5, H)
        col = np.eye(cfg.width, dtype=np.float32)[after[..., 1]]  # (B, Nj, 5, W)
        columns += [np.broadcast_to(x[:, None], (b, ni, *x.shape[1:])) for x in (row, col)]
    feats = np.concatenate(columns, axis=-1)
    return np.where(agent_vis[..., None, None], feats, np.float32(0))


def entity_features(core: WorldCore, state: WorldState, observers=None, place: bool = False,
                    belief: np.ndarray | None = None,
                    before: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(feats (B, Ni, Nj, 5, F) float32, visible (B, Ni, Nj) bool): what each observer i sees of
    every entity j. ``observers`` (Ni,) agent ids, default every agent (Ni = N); ``place``: with
    the place columns; ``belief``: the observers' ``look`` (B, Ni, Nj, C, H*W) at this step, for
    the perspective columns; ``before``: the observers' ``gem_sightings`` (B, Ni, C, H*W) of the
    step before (all False at the first step), for the pickup columns."""
    b, n = state.last_action.shape
    obs_ids = np.arange(n) if observers is None else np.asarray(observers, dtype=np.int64)
    gem_vis, agent_vis = core.visible(state)  # (B, N, G), (B, N, N)
    gem_vis, agent_vis = gem_vis[:, obs_ids], agent_vis[:, obs_ids]
    who = np.broadcast_to(obs_ids, (b, obs_ids.size))
    feats = _relational(core, state.agent_pos, state.gem_pos, who, gem_vis, agent_vis, place)
    pos = np.broadcast_to(state.agent_pos[:, None], (b, obs_ids.size, n, 2))
    if belief is not None:
        feats = _with_perspective(core, feats, belief, pos, agent_vis)
    if before is not None:
        feats = np.concatenate([feats, pickup_columns(core, before[:, :, None], pos, agent_vis)], axis=-1)
    return feats, agent_vis


def _with_perspective(core: WorldCore, feats: np.ndarray, belief: np.ndarray, pos: np.ndarray,
                      visible: np.ndarray) -> np.ndarray:
    """``feats`` (..., 5, F) with the perspective columns of agents at ``pos`` (..., 2) believed to
    remember ``belief`` (..., C, H*W) appended; zero where ``visible`` (...) is False."""
    cols = np.where(visible[..., None, None], perspective_columns(core, belief, pos), np.float32(0))
    return np.concatenate([feats, cols], axis=-1)


def pickup_columns(core: WorldCore, before: np.ndarray, pos: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(P..., 5, C) float32: for an agent at ``pos`` (P..., 2) seen (``visible`` (P...)) by an
    observer that saw the gems ``before`` (P..., C, H*W) one step ago, per colour whether the
    observer saw a gem of that colour on the agent's cell then (the agent has just collected it);
    the same for every move, zero where the agent is not seen."""
    cell = core.cells(pos)  # (P...)
    picked = np.take_along_axis(before, cell[..., None, None], axis=-1)[..., 0] & visible[..., None]  # (P..., C)
    return np.repeat(picked[..., None, :], N_ACTIONS, axis=-2).astype(np.float32)


def gem_sightings(core: WorldCore, state: WorldState, observers=None) -> np.ndarray:
    """(B, Ni, C, H*W) bool: the cells where each observer (``observers``, default every agent)
    sees a gem of each colour now; what the pickup columns of the next step read."""
    n = state.last_action.shape[1]
    obs_ids = np.arange(n) if observers is None else np.asarray(observers, dtype=np.int64)
    gem_vis = core.visible(state)[0][:, obs_ids]  # (B, Ni, G)
    b, ni = gem_vis.shape[:2]
    here = _gems_at(core, np.repeat(state.gem_pos, ni, axis=0), gem_vis.reshape(b * ni, -1))
    return here.reshape(b, ni, *here.shape[1:])


def unseen_gems(config: WorldConfig, *lead: int) -> np.ndarray:
    """(lead..., C, H*W) all False: what an observer has seen of the gems before its first look,
    the ``before`` of the pickup columns at step 0."""
    return np.zeros((*lead, config.n_colors, config.height * config.width), dtype=bool)


def view_gem_sightings(core: WorldCore, view: View) -> np.ndarray:
    """(B, C, H*W) ``gem_sightings`` from the observers' own observations (one observer per row)."""
    return _gems_at(core, view.gem_pos, view.gem_seen)


def own_features(core: WorldCore, state: WorldState, place: bool = False,
                 belief: np.ndarray | None = None, before: np.ndarray | None = None) -> np.ndarray:
    """(B, N, 5, F) float32: every agent's own situation as it sees it, the diagonal
    ``entity_features(core, state)[0][:, i, i]``; ``belief`` (B, N, C, H*W): each agent's own
    memory (the diagonal of ``look``), for the perspective columns; ``before`` (B, N, C, H*W):
    each agent's ``gem_sightings`` of the step before, for the pickup columns.

    Under full view every observer sees the same world, so the diagonal is one observer's row with
    the distance-to-observer column set to 0 (its value for j = i): N times less work than the
    full (Ni, Nj) table. Under partial view each agent's own row is computed from its own view.
    """
    b, n = state.last_action.shape
    if core.config.view_radius is None:
        feats, _ = entity_features(core, state, observers=np.zeros(1, dtype=np.int64), place=place)
        feats = feats[:, 0]
        feats[..., ego_column(core.config.n_colors)] = 0
    else:
        gem_vis, agent_vis = core.visible(state)  # (B, N, G), (B, N, N)
        rows = np.repeat(np.arange(b), n)
        flat = _relational(core, state.agent_pos[rows], state.gem_pos[rows], np.tile(np.arange(n), b)[:, None],
                           gem_vis.reshape(b * n, 1, -1), agent_vis.reshape(b * n, 1, n), place)  # (B*N, 1, N, 5, F)
        feats = flat.reshape(b, n, n, N_ACTIONS, -1)[:, np.arange(n), np.arange(n)]
    mine = np.ones((b, n), dtype=bool)
    if belief is not None:
        feats = _with_perspective(core, feats, belief, state.agent_pos, mine)
    if before is not None:
        feats = np.concatenate([feats, pickup_columns(core, before, state.agent_pos, mine)], axis=-1)
    return feats


# --- the one decoder: an agent's own observation -> its view ---------------------------------


@dataclass
class View:
    """What B observers see, decoded from their own flat observations (leading shape (B,)).

    Things an observer cannot see hold placeholders, masked by ``agent_seen``/``gem_seen``: unseen
    agents sit on the observer's cell, unseen gems on cell (0, 0). Each colour's visible gems come
    first among that colour's slots (no feature depends on the order of gems of one colour).
    """

    ego: np.ndarray  # (B,) int64 the observer's own id (its is_self row)
    agent_pos: np.ndarray  # (B, N, 2) int64
    agent_seen: np.ndarray  # (B, N) bool, the observer itself included
    last_action: np.ndarray  # (B, N) int64 last action of each agent seen, NO_ACTION if unseen
    gem_pos: np.ndarray  # (B, G, 2) int64
    gem_seen: np.ndarray  # (B, G) bool


def decode(obs: np.ndarray, config: WorldConfig) -> View:
    """(B, obs_dim) flat observations (the layout of the spec card) -> what each observer sees."""
    obs = np.asarray(obs)
    if obs.ndim != 2 or obs.shape[1] != config.obs_dim:
        raise ValueError(f"observations must have shape (B, {config.obs_dim}) for this world; got {obs.shape}")
    b = obs.shape[0]
    h, w, c, k = config.height, config.width, config.n_colors, config.gems_per_color
    seg = split_observation(obs, config)
    grid, table = seg["grid"], seg["agents"]  # (B, H, W, 2 + C), (B, N, 5)
    is_self = table[..., 4] == 1  # (B, N)
    if not np.all(is_self.sum(-1) == 1):
        raise ValueError("every observation must mark exactly one agent as itself (is_self)")
    ego = is_self.argmax(-1)  # (B,)
    rows = np.arange(b)
    agent_seen = table[..., 0] > 0  # (B, N)
    me = table[rows, ego, 1:3].astype(np.int64)  # (B, 2)
    pos = np.where(agent_seen[..., None], table[..., 1:3], me[:, None, :]).astype(np.int64)
    last = np.where(agent_seen, table[..., 3], NO_ACTION).astype(np.int64)

    gem_mask = np.moveaxis(grid[..., 2:].reshape(b, h * w, c) > 0, -1, 1)  # (B, C, H*W)
    cell = np.argsort(~gem_mask, axis=-1, kind="stable")[..., :k]  # (B, C, K) visible gems first
    gem_seen = np.take_along_axis(gem_mask, cell, axis=-1)  # (B, C, K)
    gem_pos = np.stack(np.divmod(np.where(gem_seen, cell, 0), w), axis=-1)  # (B, C, K, 2)
    return View(ego=ego.astype(np.int64), agent_pos=pos, agent_seen=agent_seen, last_action=last,
                gem_pos=gem_pos.reshape(b, c * k, 2).astype(np.int64), gem_seen=gem_seen.reshape(b, c * k))


def view_situations(core: WorldCore, view: View) -> Situations:
    """The observers' own ``Situations`` (leading shape (B,)), equal to ``situations`` row by row."""
    cfg = core.config
    b = view.ego.shape[0]
    rows = np.arange(b)
    after = core.move_targets(view.agent_pos[rows, view.ego])  # (B, 5, 2)
    c, k = cfg.n_colors, cfg.gems_per_color
    gem_pos = view.gem_pos.reshape(b, c, k, 2)
    valid = view.gem_seen.reshape(b, c, k)
    d = np.abs(after[:, :, None, None, :] - gem_pos[:, None]).sum(-1)  # (B, 5, C, K)
    d = np.where(valid[:, None], d, cfg.height + cfg.width).min(-1)  # (B, 5, C)
    gem_seen = valid.any(-1)  # (B, C)
    gem_d = np.where(gem_seen[:, None, :], d, 0).astype(np.float64)

    agent_seen = view.agent_seen & (np.arange(view.agent_seen.shape[1]) != view.ego[:, None])  # (B, N)
    agent_d = np.abs(after[:, :, None, :] - view.agent_pos[:, None]).sum(-1)  # (B, 5, N)
    agent_d = np.where(agent_seen[:, None, :], agent_d, 0.0).astype(np.float64)
    return Situations(gem_d=gem_d, gem_seen=gem_seen, agent_d=agent_d, agent_seen=agent_seen,
                      last_action=view.last_action.copy(), ego=view.ego.copy(),
                      agent_near=nearest_seen(agent_d, agent_seen))


def view_features(core: WorldCore, view: View, place: bool = False, belief: np.ndarray | None = None,
                  before: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(feats (B, N, 5, F) float32, visible (B, N)): each observer's row of ``entity_features``;
    ``belief`` (B, N, C, H*W): the observers' ``view_look`` at this step; ``before`` (B, C, H*W):
    their ``view_gem_sightings`` of the step before."""
    feats = _relational(core, view.agent_pos, view.gem_pos, view.ego[:, None], view.gem_seen[:, None],
                        view.agent_seen[:, None], place)[:, 0]
    if belief is not None:
        feats = _with_perspective(core, feats, belief, view.agent_pos, view.agent_seen)
    if before is not None:
        feats = np.concatenate([feats, pickup_columns(core, before[:, None], view.agent_pos, view.agent_seen)],
                               axis=-1)
    return feats, view.agent_seen


# --- places: cells, for personas that read where things are ---------------------------------------


def cell_distances(config: WorldConfig) -> np.ndarray:
    """(H*W, H*W) read-only Manhattan distance between flat cells (row * width + col) of a world."""
    return _distances(config.height, config.width, _dist_dtype(config))


def post_move_cells(core: WorldCore, state: WorldState) -> np.ndarray:
    """(B, N, 5) int64 flat cell of every agent after each of its moves (walls block a move)."""
    return core.move_cell[core.cells(state.agent_pos)]


def seen_gem_cells(core: WorldCore, state: WorldState) -> np.ndarray:
    """(B, N, G) int64 flat cell of every gem as each agent sees it, -1 where it does not see it.
    Gem g has colour ``g // gems_per_color``."""
    gem_vis, _ = core.visible(state)  # (B, N, G)
    return np.where(gem_vis, core.cells(state.gem_pos)[:, None, :], -1)


def view_post_move_cells(core: WorldCore, view: View) -> np.ndarray:
    """(B, 5) the observers' own ``post_move_cells``, from their observations."""
    return core.move_cell[core.cells(view.agent_pos[np.arange(view.ego.size), view.ego])]


def view_gem_cells(core: WorldCore, view: View) -> np.ndarray:
    """(B, G) the observers' ``seen_gem_cells`` from their observations: within each colour the
    same cells, visible gems first (the order of one colour's gems carries nothing)."""
    return np.where(view.gem_seen, core.cells(view.gem_pos), -1)


def pickups(core: WorldCore, gem_pos_before: np.ndarray, agent_pos_after: np.ndarray, t: int) -> np.ndarray:
    """(B, N) int64 colour of the gem each agent collected in step ``t``, -1 for none.

    Read from where the gems were when the agents moved (``gem_pos_before`` (B, G, 2)) and where
    the agents ended (``agent_pos_after`` (B, N, 2)), with the world's conflict rule: a gem entered
    by several agents goes to the one whose (id - t) mod N is smallest. Whoever sees every agent
    and gem (full view) can compute it; it equals the change of ``WorldState.collected``.
    """
    b, n = agent_pos_after.shape[:2]
    gem_cell = core.cells(gem_pos_before)  # (B, G)
    on = core.cells(agent_pos_after)[:, None, :] == gem_cell[:, :, None]  # (B, G, N)
    priority = (np.arange(n) - t) % n  # (N,)
    winner = np.where(on, priority, n).argmin(-1)  # (B, G)
    wb, wg = np.nonzero(on.any(-1))
    out = np.full((b, n), -1, dtype=np.int64)
    out[wb, winner[wb, wg]] = wg // core.config.gems_per_color
    return out


# --- what each agent sees of the cells, for agents that remember ---------------------------------


def sightings(core: WorldCore, state: WorldState) -> tuple[np.ndarray, np.ndarray]:
    """(cell_seen (B, N, H*W) bool, gem_here (B, C, H*W) bool): the cells each agent sees now and
    the cells holding a gem of each colour. What agent i sees of the gems is ``gem_here`` where
    ``cell_seen[:, i]``; an agent that remembers keeps the rest from earlier steps."""
    cfg = core.config
    b, n = state.last_action.shape
    hw = cfg.height * cfg.width
    if cfg.view_radius is None:
        cell_seen = np.ones((b, n, hw), dtype=bool)
    else:
        d = np.abs(core.cell_pos[None, None, :, :] - state.agent_pos[:, :, None, :]).max(-1)  # (B, N, H*W)
        cell_seen = d <= cfg.view_radius
    gem_here = np.zeros((b, cfg.n_colors, hw), dtype=bool)
    rows = np.broadcast_to(np.arange(b)[:, None], state.gem_pos.shape[:2])
    gem_here[rows, np.broadcast_to(state.gem_color, rows.shape), core.cells(state.gem_pos)] = True
    return cell_seen, gem_here


def remember(memory: np.ndarray | None, cell_seen: np.ndarray, gem_here: np.ndarray) -> np.ndarray:
    """(B, N, C, H*W) each agent's memory after looking: the cells it sees now hold what is there
    (a gem of colour c, or none); every other cell keeps what the agent last saw there (nothing,
    for a cell never seen). ``memory`` None: nothing seen before."""
    now = np.broadcast_to(gem_here[:, None], (*cell_seen.shape[:2], *gem_here.shape[1:]))  # (B, N, C, H*W)
    if memory is None:
        return now & cell_seen[:, :, None, :]
    return np.where(cell_seen[:, :, None, :], now, memory)


def remembered_gem_d(config: WorldConfig, memory: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gem_d (P..., 5, C) float64, believed (P..., C) bool): from each post-move cell ``after``
    (P..., 5), the Manhattan distance to the nearest cell that ``memory`` (P..., C, H*W) says holds
    a gem of colour c (0 where it believes in none), and whether it believes in any."""
    dist = _distances(config.height, config.width, _dist_dtype(config))  # (H*W, H*W)
    big = config.width + config.height
    d = dist[after]  # (P..., 5, H*W)
    masked = np.where(memory[..., None, :, :], d[..., None, :], big)  # (P..., 5, C, H*W)
    near = masked.min(-1)  # (P..., 5, C)
    believed = memory.any(-1)  # (P..., C)
    return np.where(believed[..., None, :], near, 0).astype(np.float64), believed


# --- perspective: where each agent, as far as an observer can tell, last saw gems -----------------
#
# An agent that remembers acts on what it saw, not on what is there. An observer can follow that
# from its own view alone: it sees agent j, so it knows which cells j sees (those within the view
# radius of j), and of those it sees some itself, so it knows what j saw there. Its estimate of
# j's memory ("j believes a gem of colour c is at cell x") keeps, for every cell, what the observer
# saw there the last time both it and j saw the cell; a cell it never saw j see holds nothing.
# With the observer's view covering everything j sees, the estimate is j's memory exactly
# (``agents.bayes.track_memory``); under full view it is what is there now. No persona's memory
# enters it: it is a function of the observer's own observations, like every feature here.


def _view_cells(core: WorldCore, pos: np.ndarray) -> np.ndarray:
    """(..., H*W) bool: the cells an agent at ``pos`` (..., 2) sees (all of them under full view)."""
    r = core.config.view_radius
    if r is None:
        return np.ones((*pos.shape[:-1], core.cell_pos.shape[0]), dtype=bool)
    return np.abs(core.cell_pos - pos[..., None, :]).max(-1) <= r


def _gems_at(core: WorldCore, gem_pos: np.ndarray, gem_seen: np.ndarray) -> np.ndarray:
    """(B, C, H*W) bool: the cells where the seen gems ``gem_pos`` (B, G, 2), ``gem_seen`` (B, G) are."""
    cfg = core.config
    here = np.zeros((gem_seen.shape[0], cfg.n_colors, cfg.height * cfg.width), dtype=bool)
    rows, slot = np.nonzero(gem_seen)
    here[rows, slot // cfg.gems_per_color, core.cells(gem_pos[rows, slot])] = True
    return here


def _look_update(own_cells: np.ndarray, their_cells: np.ndarray, agent_vis: np.ndarray) -> np.ndarray:
    """(B, Ni, Nj, H*W) bool: the cells observer i sees now (``own_cells`` (B, Ni, H*W)) together
    with every agent j it sees (``agent_vis`` (B, Ni, Nj); j's cells ``their_cells`` (B, 1 or Ni,
    Nj, H*W))."""
    return own_cells[:, :, None] & their_cells & agent_vis[..., None]


def look(core: WorldCore, state: WorldState, observers=None, memory: np.ndarray | None = None) -> np.ndarray:
    """(B, Ni, Nj, C, H*W) bool: after this step, where each observer i (``observers``, default every
    agent) believes each agent j last saw a gem of each colour. ``memory``: the same before the step
    (None: nothing seen before)."""
    b, n = state.last_action.shape
    obs_ids = np.arange(n) if observers is None else np.asarray(observers, dtype=np.int64)
    _, agent_vis = core.visible(state)
    cells = _view_cells(core, state.agent_pos)  # (B, N, H*W)
    update = _look_update(cells[:, obs_ids], cells[:, None], agent_vis[:, obs_ids])  # (B, Ni, Nj, H*W)
    here = _gems_at(core, state.gem_pos, np.ones(state.gem_pos.shape[:2], dtype=bool))[:, None, None]
    return _remembered(update, here, memory)


def view_look(core: WorldCore, view: View, memory: np.ndarray | None = None) -> np.ndarray:
    """(B, N, C, H*W) ``look`` from the observers' own observations (one observer per row)."""
    rows = np.arange(view.ego.size)
    update = _look_update(_view_cells(core, view.agent_pos[rows, view.ego])[:, None],
                          _view_cells(core, view.agent_pos)[:, None], view.agent_seen[:, None])[:, 0]  # (B, N, H*W)
    here = _gems_at(core, view.gem_pos, view.gem_seen)[:, None]  # (B, 1, C, H*W)
    return _remembered(update, here, memory)


def _remembered(update: np.ndarray, here: np.ndarray, memory: np.ndarray | None) -> np.ndarray:
    now = np.broadcast_to(here, (*update.shape[:-1], *here.shape[-2:]))
    if memory is None:
        return now & update[..., None, :]
    return np.where(update[..., None, :], now, memory)


def look_history(core: WorldCore, states: WorldState, observers=None) -> np.ndarray:
    """(T, Ni, Nj, C, H*W) ``look`` at every step of one episode's states (leading axis: time),
    from the first: entry t equals ``look`` step by step up to t, computed without a loop (each
    cell holds what was seen there at the last step that updated it)."""
    t, n = states.last_action.shape
    obs_ids = np.arange(n) if observers is None else np.asarray(observers, dtype=np.int64)
    _, agent_vis = core.visible(states)
    cells = _view_cells(core, states.agent_pos)  # (T, N, H*W)
    update = _look_update(cells[:, obs_ids], cells[:, None], agent_vis[:, obs_ids])  # (T, Ni, Nj, H*W)
    last = np.maximum.accumulate(np.where(update, np.arange(t)[:, None, None, None], -1), axis=0)
    here = _gems_at(core, states.gem_pos, np.ones(states.gem_pos.shape[:2], dtype=bool))  # (T, C, H*W)
    colour, cell = np.arange(here.shape[1])[:, None], np.arange(here.shape[2])
    seen = here[np.maximum(last, 0)[..., None, :], colour, cell]  # (T, Ni, Nj, C, H*W)
    return seen & (last >= 0)[..., None, :]


def perspective_columns(core: WorldCore, memory: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """(P..., 5, 2C) float32: for an agent at ``pos`` (P..., 2) believed (``memory`` (P..., C, H*W))
    to remember gems there, per colour c the change of its distance to the nearest cell it
    believes holds a gem of c after each move (0 where it believes in none), then whether it
    believes in any: the gem columns of the relational features, read from its memory."""
    after = core.move_cell[core.cells(pos)]  # (P..., 5)
    gem_d, believed = remembered_gem_d(core.config, memory, after)  # (P..., 5, C), (P..., C)
    delta = gem_d - gem_d[..., :1, :]
    flags = np.broadcast_to(believed[..., None, :], delta.shape)
    return np.concatenate([delta, flags], axis=-1).astype(np.float32)
