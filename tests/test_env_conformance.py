"""mirrorhall_v0 against PettingZoo's conformance tests and its own spec card, over many configs.

Also: the vectorised ``WorldCore.situations`` equals the plain per-agent decoder
a plain per-agent decoder for every agent, and the perception module's two paths (world state and
own observation) against each other, bit for bit (the core equivalence checks).
"""

from __future__ import annotations

import functools
import types

import numpy as np
import pytest
from pettingzoo.test import (
    api_test,
    max_cycles_test,
    parallel_api_test,
    parallel_seed_test,
    render_test,
)

from mirrorhall.agents.bayes import track_memory
from mirrorhall.envs import REGISTRY, make, mirrorhall_v0
from mirrorhall.envs.core import (
    AGENT_COLUMNS,
    MOVES,
    N_ACTIONS,
    NO_ACTION,
    WorldConfig,
    WorldCore,
    split_observation,
)
from mirrorhall.envs.perception import (
    Situations,
    decode,
    entity_features,
    gem_sightings,
    look,
    look_history,
    nearest_seen,
    own_features,
    situations,
    view_features,
    view_gem_sightings,
    view_look,
    view_situations,
)

# (id, kwargs, cycles): cycles bounds the loops of the slower tests (64 agents get fewer).
CONFIGS = [
    ("default", {}, 300),
    ("single_agent", {"n_agents": 1}, 300),
    ("crowd64", {"n_agents": 64, "width": 13, "height": 13}, 40),
    ("wide_13x7", {"width": 13, "height": 7}, 300),
    ("tall_7x13", {"width": 7, "height": 13}, 300),
    ("view1", {"view_radius": 1}, 300),
    ("view2_nonsquare", {"view_radius": 2, "width": 9, "height": 12, "n_agents": 5}, 300),
    ("one_colour", {"n_colors": 1, "gems_per_color": 3}, 300),
    ("eight_colours", {"n_colors": 8, "gems_per_color": 1}, 300),
    ("interior_walls", {"interior_walls": ((3, 3), (3, 4), (3, 5), (6, 7), (7, 7))}, 300),
    ("walls_view2_24", {"n_agents": 24, "width": 12, "height": 10, "view_radius": 2,
                        "interior_walls": ((5, 2), (5, 3), (5, 4), (2, 8))}, 100),
]
IDS = [c[0] for c in CONFIGS]


def env_fns(kwargs):
    return (functools.partial(mirrorhall_v0.parallel_env, **kwargs),
            functools.partial(mirrorhall_v0.env, **kwargs))


# --- PettingZoo's own tests ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kwargs", "cycles"), CONFIGS, ids=IDS)
def test_parallel_api(name, kwargs, cycles):
    parallel_api_test(mirrorhall_v0.parallel_env(**kwargs), num_cycles=cycles)


@pytest.mark.parametrize(("name", "kwargs", "cycles"), CONFIGS, ids=IDS)
def test_parallel_seed(name, kwargs, cycles):
    par_fn, _ = env_fns({**kwargs, "max_cycles": cycles})
    parallel_seed_test(par_fn, num_cycles=cycles)


@pytest.mark.parametrize(("name", "kwargs", "cycles"), CONFIGS, ids=IDS)
def test_render_through_parallel_to_aec(name, kwargs, cycles):
    _, aec_fn = env_fns(kwargs)
    render_test(aec_fn)


@pytest.mark.parametrize(("name", "kwargs", "cycles"), CONFIGS, ids=IDS)
def test_max_cycles(name, kwargs, cycles):
    par_fn, aec_fn = env_fns(kwargs)
    max_cycles_test(types.SimpleNamespace(parallel_env=par_fn, env=aec_fn))


@pytest.mark.parametrize(("name", "kwargs", "cycles"), CONFIGS, ids=IDS)
def test_aec_api(name, kwargs, cycles):
    api_test(mirrorhall_v0.env(**kwargs), num_cycles=min(cycles, 100))


def test_registered_under_versioned_name():
    assert REGISTRY["mirrorhall_v0"] is mirrorhall_v0
    assert mirrorhall_v0.MirrorhallParallelEnv.metadata["name"] == "mirrorhall_v0"
    env = make("mirrorhall_v0", n_agents=3)
    assert env.possible_agents == ["agent_0", "agent_1", "agent_2"]
    assert set(env.metadata["render_modes"]) == {"human", "rgb_array", "ansi"}


# --- the spec card ------------------------------------------------------------------------------


def _random_run(env, steps, seed, options=None):
    """Yield (obs, rewards, infos) after reset and after each of ``steps`` random joint actions."""
    rng = np.random.default_rng(seed)
    obs, infos = env.reset(seed=seed, options=options)
    yield obs, None, infos
    for _ in range(steps):
        if not env.agents:
            return
        actions = {a: int(rng.integers(5)) for a in env.agents}
        obs, rew, term, trunc, infos = env.step(actions)
        assert not any(term.values()), "nobody terminates; episodes end by truncation"
        yield obs, rew, infos


@pytest.mark.parametrize(("name", "kwargs", "cycles"), CONFIGS, ids=IDS)
def test_observation_shape_and_segments(name, kwargs, cycles):
    env = mirrorhall_v0.parallel_env(**kwargs)
    cfg = env.config
    walls = cfg.walls()
    r = cfg.view_radius
    steps = min(cycles, 30)
    for obs, _, _ in _random_run(env, steps, seed=3):
        ws = env.world_state
        assert set(obs) == set(env.agents)
        for agent, o in obs.items():
            i = env.agent_index(agent)
            assert o.shape == (cfg.obs_dim,) == env.observation_space(agent).shape
            assert o.dtype == np.float32
            assert env.observation_space(agent).contains(o)
            seg = split_observation(o, cfg)
            grid, table, goal = seg["grid"], seg["agents"], seg["goal"]
            assert grid.shape == (cfg.height, cfg.width, 2 + cfg.n_colors)
            assert table.shape == (cfg.n_agents, AGENT_COLUMNS)
            # own row: the only is_self row, visible, at the agent's true position
            assert np.flatnonzero(table[:, 4] == 1).tolist() == [i]
            assert table[i, 0] == 1
            assert tuple(table[i, 1:3]) == tuple(ws.agent_pos[0, i])
            assert table[i, 3] == ws.last_action[0, i]
            # default goal: "any"
            assert goal.tolist() == [0.0] * cfg.n_colors + [1.0]
            me = ws.agent_pos[0, i]
            if r is None:
                assert np.all(grid[..., 0] == 1)
                np.testing.assert_array_equal(grid[..., 1] == 1, walls)
                # full view: exactly gems_per_color gems of each colour, on their true cells
                assert grid[..., 2:].sum(axis=(0, 1)).tolist() == [cfg.gems_per_color] * cfg.n_colors
                np.testing.assert_array_equal(table[:, 0], 1)
                np.testing.assert_array_equal(table[:, 1:3], ws.agent_pos[0])
                np.testing.assert_array_equal(table[:, 3], ws.last_action[0])
            else:
                rows, cols = np.indices((cfg.height, cfg.width))
                in_view = (np.abs(rows - me[0]) <= r) & (np.abs(cols - me[1]) <= r)
                np.testing.assert_array_equal(grid[..., 0] == 1, in_view)
                np.testing.assert_array_equal(grid[..., 1] == 1, in_view & walls)
                assert np.all(grid[~in_view] == 0)
                dist = np.abs(ws.agent_pos[0] - me).max(-1)
                np.testing.assert_array_equal(table[:, 0] == 1, dist <= r)
                hidden = dist > r
                assert np.all(table[hidden, 1:4] == -1)
                gem_d = np.abs(ws.gem_pos[0] - me).max(-1)
                for c in range(cfg.n_colors):
                    assert grid[..., 2 + c].sum() == np.sum((gem_d <= r) & (ws.gem_color == c))
            # the border is a wall wherever it is visible, and the ego's neighbours are visible
            border = ~np.pad(np.ones((cfg.height - 2, cfg.width - 2), bool), 1)
            assert np.all(grid[border & (grid[..., 0] == 1), 1] == 1)
            assert np.all(grid[me[0] - 1: me[0] + 2, me[1] - 1: me[1] + 2, 0] == 1)


@pytest.mark.parametrize(("name", "kwargs", "cycles"), CONFIGS, ids=IDS)
def test_state(name, kwargs, cycles):
    env = mirrorhall_v0.parallel_env(**kwargs)
    cfg = env.config
    with pytest.raises(ValueError, match="reset"):
        env.state()
    for _ in _random_run(env, min(cycles, 10), seed=5):
        s = env.state()
        assert s.shape == env.state_space.shape == (cfg.obs_dim,)
        assert s.dtype == np.float32
        assert env.state_space.contains(s)
        seg = split_observation(s, cfg)
        assert np.all(seg["agents"][:, 4] == 0), "the global state has no is_self flag"
        assert seg["goal"][0] == env.world_state.t and np.all(seg["goal"][1:] == 0)
        np.testing.assert_array_equal(seg["agents"][:, 1:3], env.world_state.agent_pos[0])
        np.testing.assert_array_equal(seg["grid"][..., 1] == 1, cfg.walls())
        assert seg["grid"][..., 2:].sum() == cfg.n_gems


def test_spaces_are_cached_objects():
    env = mirrorhall_v0.parallel_env(n_agents=4)
    for agent in env.possible_agents:
        assert env.observation_space(agent) is env.observation_space(agent)
        assert env.action_space(agent) is env.action_space(agent)
        assert env.observation_space(agent) is env.observation_spaces[agent]
        assert env.action_space(agent) is env.action_spaces[agent]
    env.reset(seed=0)
    env.step({a: 1 for a in env.agents})
    assert env.observation_space("agent_0") is env.observation_spaces["agent_0"]
    assert env.action_space("agent_3").n == 5


@pytest.mark.parametrize("kwargs", [{}, {"n_colors": 1, "gems_per_color": 3, "n_agents": 3},
                                    {"n_colors": 8, "gems_per_color": 1, "view_radius": 2}])
def test_rewards_only_for_the_valued_colour(kwargs):
    env = mirrorhall_v0.parallel_env(max_cycles=400, **kwargs)
    cfg = env.config
    n, c = cfg.n_agents, cfg.n_colors
    valued = {f"agent_{i}": cfg.color_names[i % c] for i in range(n) if i != n - 1}  # last: "any"
    want = np.array([i % c for i in range(n - 1)] + [-1])
    got_valued = got_other = 0
    before = None
    for obs, rew, infos in _random_run(env, 400, seed=11, options={"valued": valued}):
        coll = env.world_state.collected[0].copy()  # (N, C)
        for agent, o in obs.items():
            goal = split_observation(o, cfg)["goal"]
            assert goal.argmax() == (want[env.agent_index(agent)] % (c + 1))
        if rew is not None:
            diff = coll - before
            assert diff.sum(-1).max() <= 1, "an agent collects at most one gem per step"
            for agent, r in rew.items():
                i = env.agent_index(agent)
                assert infos[agent]["collected"] == diff[i].sum()
                expect = diff[i].sum() if want[i] == -1 else diff[i, want[i]]
                assert r == float(expect), (agent, r, diff[i])
                if want[i] != -1:
                    got_valued += diff[i, want[i]]
                    got_other += diff[i].sum() - diff[i, want[i]]
        before = coll
    assert got_valued > 0 and (got_other > 0 or c == 1), "both branches of the rule must occur"


def test_reset_options_other_keys_ignored_and_valued_reset_each_episode():
    env = mirrorhall_v0.parallel_env(n_agents=2)
    obs, _ = env.reset(seed=0, options={"valued": {"agent_1": "blue"}, "other": 1})
    assert split_observation(obs["agent_1"], env.config)["goal"].tolist() == [0, 0, 1, 0, 0]
    obs, _ = env.reset(seed=0)
    assert split_observation(obs["agent_1"], env.config)["goal"].tolist() == [0, 0, 0, 0, 1]


@pytest.mark.parametrize(("name", "kwargs", "cycles"), CONFIGS, ids=IDS)
def test_world_invariants_over_many_steps(name, kwargs, cycles):
    """Gem counts constant (respawn), gems on distinct free cells, agents never on walls."""
    env = mirrorhall_v0.parallel_env(max_cycles=max(cycles, 200), **kwargs)
    cfg = env.config
    walls = cfg.walls()
    total = 0
    for _, rew, _ in _random_run(env, max(cycles, 200), seed=7):
        ws = env.world_state
        ap, gp = ws.agent_pos[0], ws.gem_pos[0]
        assert not walls[ap[:, 0], ap[:, 1]].any(), "an agent stands on a wall"
        assert not walls[gp[:, 0], gp[:, 1]].any(), "a gem lies on a wall"
        assert gp.shape == (cfg.n_gems, 2)
        assert np.bincount(ws.gem_color, minlength=cfg.n_colors).tolist() == [cfg.gems_per_color] * cfg.n_colors
        gem_cells = gp[:, 0] * cfg.width + gp[:, 1]
        assert len(set(gem_cells.tolist())) == cfg.n_gems, "two gems share a cell"
        agent_cells = set((ap[:, 0] * cfg.width + ap[:, 1]).tolist())
        assert not agent_cells & set(gem_cells.tolist()), "a gem lies under an agent after a step"
        if rew is not None:
            total += sum(rew.values())
    assert total == env.world_state.collected.sum() > 0
    assert env.agents == [], "the episode ends by truncation after max_cycles"


def test_truncation_at_max_cycles_and_step_after_end():
    env = mirrorhall_v0.parallel_env(n_agents=2, max_cycles=3)
    env.reset(seed=0)
    for t in range(3):
        _, _, term, trunc, _ = env.step({a: 0 for a in env.agents})
        assert trunc == {"agent_0": t == 2, "agent_1": t == 2}
        assert term == {"agent_0": False, "agent_1": False}
    assert env.agents == []
    with pytest.raises(ValueError, match="reset"):
        env.step({})


def test_conflict_rule_rotates_priority():
    """Several agents entering one gem: it goes to the smallest (id - t) mod N."""
    cfg = WorldConfig(n_agents=3, width=5, height=5, n_colors=1, gems_per_color=1)
    core = WorldCore(cfg)
    for t in range(6):
        state = core.reset(1, np.random.default_rng(0))
        state.t = t
        state.gem_pos[0, 0] = (2, 2)
        state.agent_pos[0] = [(1, 2), (3, 2), (2, 1)]  # above, below, left of the gem
        rew = core.step(state, np.array([[2, 1, 4]]), np.random.default_rng(1))
        winner = int(np.argmin((np.arange(3) - t) % 3))
        assert rew[0].tolist() == [float(i == winner) for i in range(3)]
        assert state.collected[0, :, 0].tolist() == [int(i == winner) for i in range(3)]
        assert tuple(state.gem_pos[0, 0]) != (2, 2)


# --- core equivalence ----------------------------------------------------------------------------

CORE_CONFIGS = [
    WorldConfig(),
    WorldConfig(n_agents=6, width=13, height=7, view_radius=2),
    WorldConfig(n_agents=6, width=7, height=13, view_radius=1, n_colors=2, gems_per_color=3),
    WorldConfig(n_agents=12, width=12, height=9, n_colors=8, gems_per_color=1,
                interior_walls=((4, 4), (4, 5), (4, 6), (2, 9))),
    WorldConfig(n_agents=1, n_colors=1, view_radius=3),
    WorldConfig(n_agents=20, width=10, height=10, view_radius=2, n_colors=3),
]


@pytest.mark.parametrize("cfg", CORE_CONFIGS, ids=lambda c: f"{c.n_agents}a_{c.width}x{c.height}_r{c.view_radius}")
def test_vectorised_situations_equal_per_agent_decoder(cfg):
    core = WorldCore(cfg)
    rng = np.random.default_rng(cfg.n_agents)
    state = core.reset(3, rng)
    checked = 0
    for t in range(16):
        if t in (0, 1, 5, 15):
            sit = situations(core, state)
            obs = core.observations(state)
            assert sit.shape == (3, cfg.n_agents)
            for b in range(3):
                for i in range(cfg.n_agents):
                    ref = plain_situation(obs[b, i], cfg)
                    got = sit.take((b, i))
                    for f in Situations.FIELDS:
                        np.testing.assert_array_equal(getattr(got, f), getattr(ref, f),
                                                      err_msg=f"{f} b={b} i={i} t={t}")
                    checked += 1
            if t == 0:
                assert np.all(sit.last_action[sit.agent_seen] == NO_ACTION)
        core.step(state, rng.integers(0, 5, size=(3, cfg.n_agents)), rng)
    assert checked == 4 * 3 * cfg.n_agents


# The scenes the episode digests are taken on: full and partial view, 8-64 agents, walls.
PERCEPTION_CONFIGS = [
    WorldConfig(n_agents=8),
    WorldConfig(n_agents=8, view_radius=2),
    WorldConfig(n_agents=24, width=15, height=13, view_radius=3, interior_walls=((4, 4), (5, 6))),
    pytest.param(WorldConfig(n_agents=64, width=20, height=17), marks=pytest.mark.slow),  # about 13 s
    WorldConfig(n_agents=32, width=14, height=12, view_radius=2, interior_walls=((3, 3),)),
    WorldConfig(n_agents=5, width=9, height=7, n_colors=3, view_radius=1, interior_walls=((3, 4),)),
]


@pytest.mark.parametrize("cfg", PERCEPTION_CONFIGS, ids=lambda c: f"{c.n_agents}a_{c.width}x{c.height}_r{c.view_radius}")
def test_perception_from_observations_equals_perception_from_state(cfg):
    """What an agent's own observation decodes to gives bit-identical situations and relational
    features to the batched path over the true state (every observer, every entity)."""
    core = WorldCore(cfg)
    rng = np.random.default_rng(cfg.n_agents + 1)
    state = core.reset(2, rng)
    b, n = 2, cfg.n_agents
    belief = vbelief = None
    before = np.zeros((b, n, cfg.n_colors, cfg.height * cfg.width), dtype=bool)  # nothing seen before step 0
    vbefore = before.reshape(b * n, *before.shape[2:])
    for t in range(12):
        obs = core.observations(state).reshape(b * n, -1)  # (B * N, obs_dim)
        view = decode(obs, cfg)
        np.testing.assert_array_equal(view.ego, np.tile(np.arange(n), b))
        want = situations(core, state)
        got = view_situations(core, view)
        for f in Situations.FIELDS:
            np.testing.assert_array_equal(getattr(got, f), getattr(want, f).reshape(b * n, *getattr(got, f).shape[1:]),
                                          err_msg=f"{f} t={t}")
        feats, vis = entity_features(core, state)  # (B, N, N, 5, F), (B, N, N)
        vfeats, vvis = view_features(core, view)  # (B * N, N, 5, F)
        assert vfeats.tobytes() == feats.reshape(b * n, n, 5, -1).tobytes(), f"features differ at t={t}"
        np.testing.assert_array_equal(vvis, vis.reshape(b * n, n))
        some = np.array([0, n - 1])
        part, part_vis = entity_features(core, state, observers=some)
        assert part.tobytes() == feats[:, some].tobytes() and np.array_equal(part_vis, vis[:, some])
        own = own_features(core, state)  # training's shortcut to the diagonal
        assert own.tobytes() == feats[:, np.arange(n), np.arange(n)].tobytes(), f"own rows differ at t={t}"
        # with the place columns: the same columns first, then the same parity on every path
        placed, _ = entity_features(core, state, place=True)
        assert placed.shape[-1] == feats.shape[-1] + cfg.height + cfg.width
        assert placed[..., : feats.shape[-1]].tobytes() == feats.tobytes()
        assert view_features(core, view, place=True)[0].tobytes() == placed.reshape(b * n, n, 5, -1).tobytes()
        assert own_features(core, state, place=True).tobytes() == placed[:, np.arange(n), np.arange(n)].tobytes()
        # with the perspective columns, followed from step 0 on both paths
        belief = look(core, state, memory=belief if t else None)  # (B, N, N, C, H*W)
        vbelief = view_look(core, view, vbelief if t else None)  # (B * N, N, C, H*W)
        assert vbelief.tobytes() == belief.reshape(b * n, *belief.shape[2:]).tobytes(), f"look differs at t={t}"
        seen, _ = entity_features(core, state, belief=belief)
        assert seen.shape[-1] == feats.shape[-1] + 2 * cfg.n_colors
        assert seen[..., : feats.shape[-1]].tobytes() == feats.tobytes()
        assert view_features(core, view, belief=vbelief)[0].tobytes() == seen.reshape(b * n, n, 5, -1).tobytes()
        own = own_features(core, state, belief=belief[:, np.arange(n), np.arange(n)])
        assert own.tobytes() == seen[:, np.arange(n), np.arange(n)].tobytes()
        # with the pickup columns, from what each observer saw of the gems a step before
        picked, _ = entity_features(core, state, before=before)
        assert picked.shape[-1] == feats.shape[-1] + cfg.n_colors
        assert picked[..., : feats.shape[-1]].tobytes() == feats.tobytes()
        vpicked = view_features(core, view, before=vbefore)[0]
        assert vpicked.tobytes() == picked.reshape(b * n, n, 5, -1).tobytes(), f"pickup columns differ at t={t}"
        assert own_features(core, state, before=before).tobytes() == picked[:, np.arange(n), np.arange(n)].tobytes()
        before, vbefore = gem_sightings(core, state), view_gem_sightings(core, view)
        assert vbefore.tobytes() == before.reshape(b * n, *before.shape[2:]).tobytes()
        core.step(state, rng.integers(0, 5, size=(b, n)), rng)


def test_pickup_columns_say_which_colour_an_agent_just_collected():
    """Under full view the pickup columns of every agent are the colour the world credited it with
    in the step just taken (the change of ``WorldState.collected``), except that an agent that
    entered a gem's cell together with its collector reads as collecting it too."""
    cfg = WorldConfig(n_agents=12, width=7, height=7, gems_per_color=3)
    core = WorldCore(cfg)
    rng = np.random.default_rng(5)
    state = core.reset(4, rng)
    c, credited, shared = cfg.n_colors, 0, 0
    for _ in range(40):
        before, got = gem_sightings(core, state), state.collected.copy()
        core.step(state, rng.integers(0, 5, size=(4, cfg.n_agents)), rng)
        truth = state.collected - got  # (B, N, C) one-hot where an agent collected
        feats, _ = entity_features(core, state, before=before)
        picked = feats[:, 0, :, 0, -c:].astype(np.int64)  # observer 0's view of everyone, stay column
        assert np.all(feats[:, 0, :, :, -c:] == feats[:, 0, :, :1, -c:])  # the same for every move
        assert np.all(picked >= truth)
        extra = np.argwhere(picked > truth)  # (b, j, colour) read as collected, not credited
        for b, j, col in extra:
            cell = state.agent_pos[b, j]
            mates = (state.agent_pos[b] == cell).all(-1) & (truth[b, :, col] == 1)
            assert mates.any(), "a pickup read where nobody collected"
        credited, shared = credited + int(truth.sum()), shared + len(extra)
    assert credited > 50 and shared < credited / 5


def test_features_of_unseen_entities_are_zero_and_of_seen_ones_exact():
    """Rows of agents an observer cannot see are all zero; a seen agent's row holds its distance
    changes, computed here by hand for one observer."""
    cfg = WorldConfig(n_agents=4, width=9, height=9, n_colors=2, gems_per_color=1, view_radius=2)
    core = WorldCore(cfg)
    state = core.reset(1, np.random.default_rng(0))
    state.agent_pos[0] = [[4, 4], [4, 5], [1, 1], [6, 4]]  # agent 2 is out of agent 0's view
    state.gem_pos[0] = [[4, 6], [7, 7]]  # the green gem is out of agent 0's view
    feats, vis = entity_features(core, state)
    assert vis[0, 0].tolist() == [True, True, False, True]
    assert not feats[0, 0, 2].any()
    row = feats[0, 0, 1]  # (5, F): agent 1 at (4, 5) as agent 0 sees it; red gem at (4, 6)
    # columns: d_red, d_green, seen_red, seen_green, d_near, d_observer, blocked
    assert row[:, 0].tolist() == [0, 1, 1, 1, -1]  # stay, up, down, left, right
    assert row[:, 1].tolist() == [0] * 5 and row[:, 2].tolist() == [1] * 5 and row[:, 3].tolist() == [0] * 5
    assert row[:, 5].tolist() == [0, 1, 1, -1, 1]  # to the observer at (4, 4)
    assert row[:, 4].tolist() == [0, 1, 1, -1, 1]  # nearest other agent agent 1 sees through 0's eyes: agent 0
    assert row[:, 6].tolist() == [0] * 5
    placed, _ = entity_features(core, state, place=True)
    assert not placed[0, 0, 2].any()  # the place of an unseen agent is unseen too
    rows, cols = placed[0, 0, 1, :, 7:16], placed[0, 0, 1, :, 16:]  # one-hot row and column after each move
    assert rows.sum(-1).tolist() == [1] * 5 and cols.sum(-1).tolist() == [1] * 5
    assert rows.argmax(-1).tolist() == [4, 3, 5, 4, 4] and cols.argmax(-1).tolist() == [5, 5, 5, 4, 6]
    sit = situations(core, state)
    np.testing.assert_array_equal(sit.agent_near[0, 0], nearest_seen(sit.agent_d[0, 0], sit.agent_seen[0, 0]))


def test_perspective_keeps_where_an_agent_last_saw_a_gem_that_moved_out_of_its_sight():
    """The observer's estimate of what agent 1 saw: a red gem seen by both at step 0 moves while
    agent 1 looks away; agent 1's perspective columns still point at the old cell (by hand), the
    gem columns at the new one; an agent the observer never sees has all-zero columns."""
    cfg = WorldConfig(n_agents=3, width=11, height=11, n_colors=2, gems_per_color=1, view_radius=2)
    core = WorldCore(cfg)
    state = core.reset(1, np.random.default_rng(0))
    state.agent_pos[0] = [[5, 5], [5, 4], [1, 9]]  # agent 2 is out of agent 0's view throughout
    state.gem_pos[0] = [[5, 6], [9, 9]]  # red next to both, green out of every view
    first = look(core, state)
    state.agent_pos[0, 1] = [5, 3]  # agent 1 steps away: (5, 6) leaves its view
    state.gem_pos[0, 0] = [3, 7]  # the red gem moves where agent 0 sees it and agent 1 does not
    belief = look(core, state, memory=first)
    red = core.cells(np.array([5, 6]))
    assert belief[0, 0, 1, 0].nonzero()[0].tolist() == [red] and not belief[0, 0, 1, 1].any()
    assert not belief[0, 0, 2].any()
    feats, _ = entity_features(core, state, belief=belief)
    row = feats[0, 0, 1]  # (5, F): stay, up, down, left, right from (5, 3)
    # columns: d_red, d_green, seen_red, seen_green, d_near, d_observer, blocked, then b_red, b_green, believes
    assert row[:, 0].tolist() == [0, -1, 1, 1, -1]  # toward the red gem at (3, 7), where it is now
    assert row[:, 7].tolist() == [0, 1, 1, 1, -1]  # toward (5, 6), where agent 1 last saw it
    assert row[:, 8].tolist() == [0] * 5 and row[:, 9].tolist() == [1] * 5 and row[:, 10].tolist() == [0] * 5
    assert not feats[0, 0, 2].any()
    # agent 1's own memory (what the believers act on) is the same: agent 0 saw all that agent 1 saw
    states = core.recorded_state(np.stack([np.array([[5, 5], [5, 4], [1, 9]]), state.agent_pos[0]]),
                                 np.stack([np.array([[5, 6], [9, 9]]), state.gem_pos[0]]),
                                 np.full((2, 3), NO_ACTION), np.zeros((2, 3), dtype=np.int64))
    history = look_history(core, states)
    assert np.array_equal(history[0], first[0]) and np.array_equal(history[1], belief[0])
    track = track_memory(core, [first_state(core, states, t) for t in range(2)], [1])  # a believer's own memory
    assert np.array_equal(track[1][0], history[1, 1, 1])


def first_state(core, states, t):
    """Step ``t`` of a recorded (T, ...) state as a batch of one world."""
    return core.recorded_state(states.agent_pos[t: t + 1], states.gem_pos[t: t + 1], states.last_action[t: t + 1],
                               states.valued[t: t + 1])


def test_decode_refuses_observations_of_another_world():
    cfg = WorldConfig(n_agents=3)
    obs = WorldCore(cfg).observations(WorldCore(cfg).reset(1, np.random.default_rng(0)))[0]
    with pytest.raises(ValueError, match="shape"):
        decode(obs[:, :-1], cfg)
    bad = obs.copy()
    bad[:, cfg.obs_layout["agents"][0] + 4] = 1.0  # agent 0 marked as itself in every observation too
    with pytest.raises(ValueError, match="is_self"):
        decode(bad, cfg)


def plain_situation(obs: np.ndarray, config: WorldConfig) -> Situations:
    """One agent's flat observation -> its Situations (leading shape ()): a plain per-agent
    loop written independently of the perception module, the oracle both of its paths must equal."""
    seg = split_observation(np.asarray(obs), config)
    grid, table = seg["grid"], seg["agents"]
    n, c = config.n_agents, config.n_colors
    ego = int(np.flatnonzero(table[:, 4] == 1)[0])
    me = table[ego, 1:3].astype(np.int64)
    wall = grid[..., 1] > 0  # the cells next to the ego are always in view (view_radius >= 1)
    after = np.empty((N_ACTIONS, 2), dtype=np.int64)
    for a in range(N_ACTIONS):
        nxt = me + MOVES[a]
        after[a] = me if wall[nxt[0], nxt[1]] else nxt
    gem_d = np.zeros((N_ACTIONS, c))
    gem_seen = np.zeros(c, dtype=bool)
    for col in range(c):
        cells = np.argwhere(grid[..., 2 + col] > 0)
        if len(cells):
            gem_seen[col] = True
            for a in range(N_ACTIONS):
                gem_d[a, col] = np.abs(cells - after[a]).sum(1).min()
    agent_d = np.zeros((N_ACTIONS, n))
    agent_seen = np.zeros(n, dtype=bool)
    last = np.full(n, NO_ACTION, dtype=np.int64)
    for j in range(n):
        if table[j, 0] > 0:
            last[j] = int(table[j, 3])
            if j != ego:
                agent_seen[j] = True
                for a in range(N_ACTIONS):
                    agent_d[a, j] = np.abs(table[j, 1:3] - after[a]).sum()
    return Situations(
        gem_d=gem_d, gem_seen=gem_seen, agent_d=agent_d, agent_seen=agent_seen,
        last_action=last, ego=np.array(ego), agent_near=nearest_seen(agent_d, agent_seen),
    )
