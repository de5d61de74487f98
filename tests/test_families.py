"""Persona families: exact probabilities against a plain per-agent reference, sampling, state,
counterfactual queries, the Bayes observer against brute-force enumeration, populations.

The reference below re-implements the formulas of ``mirrorhall.agents.families`` with plain
Python loops over agents, gems and actions, reading raw positions of the recorded world and
tracking each persona's state with the world's own accounting of collected gems
(``WorldState.collected``); it shares nothing with the vectorised path.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mirrorhall.agents.bayes import FamilyHypotheses, FamilyObserver, situation_of, softmax
from mirrorhall.agents.cast import Cast
from mirrorhall.agents.families import DescribedFamilies, family_grid
from mirrorhall.agents.personas import (
    FAMILIES,
    STYLES,
    Collector,
    Contrarian,
    Explorer,
    Mirror,
    Patrol,
    Territorial,
    Trait,
    persona_from_json,
)
from mirrorhall.agents.scene import run_scene
from mirrorhall.envs.core import MOVES, NO_ACTION, WorldConfig, WorldCore
from mirrorhall.envs.perception import (
    decode,
    pickups,
    post_move_cells,
    seen_gem_cells,
    view_gem_cells,
    view_post_move_cells,
)

# --- the plain reference -------------------------------------------------------------------------


def manhattan(p, q):
    return abs(p[0] - q[0]) + abs(p[1] - q[1])


def ref_after(me, walls):
    out = []
    for a in range(5):
        r, c = me[0] + int(MOVES[a][0]), me[1] + int(MOVES[a][1])
        out.append(me if walls[r, c] else (r, c))
    return out


def sees(cfg, me, cell):
    return cfg.view_radius is None or max(abs(me[0] - cell[0]), abs(me[1] - cell[1])) <= cfg.view_radius


def recipe(spec, ego, snap, state, cfg):
    """How ``spec`` with state ``state`` picks its action in agent ``ego``'s situation of the world
    snapshot: ("softmax", beta, utilities) or ("mix", noise, the moves intended, uniformly)."""
    agent_pos, gem_pos, last = snap
    me = tuple(agent_pos[ego])
    after = ref_after(me, cfg.walls())
    gems = [(tuple(gem_pos[g]), g // cfg.gems_per_color) for g in range(len(gem_pos)) if sees(cfg, me, gem_pos[g])]
    if isinstance(spec, Patrol):
        goal = spec.waypoints[state["phase"]]
        d = [manhattan(a, goal) for a in after]
        return ("mix", spec.noise, [a for a in range(5) if d[a] == min(d)])
    if isinstance(spec, Collector):
        want = cfg.color_names.index(spec.order[state["phase"]])
        cells = [cell for cell, col in gems if col == want]
        u = [-min(manhattan(a, c) for c in cells) if cells else 0.0 for a in after]
        return ("softmax", STYLES[spec.style], u)
    if isinstance(spec, Territorial):
        inside = [cell for cell, _ in gems if manhattan(cell, spec.home) <= spec.radius]
        goals = inside or [spec.home]
        return ("softmax", STYLES[spec.style], [-min(manhattan(a, g) for g in goals) for a in after])
    if isinstance(spec, Contrarian):
        k = spec.target
        visible = sees(cfg, me, agent_pos[k])
        move = last[k] if visible else NO_ACTION
        if move in (1, 2, 3, 4):
            return ("mix", spec.noise, [{1: 2, 2: 1, 3: 4, 4: 3}[move]])
        if move == 0 and visible and k != ego:
            d = [manhattan(a, agent_pos[k]) for a in after]
            return ("mix", spec.noise, [a for a in range(5) if d[a] == max(d)])
        return ("mix", 1.0, [0])
    assert isinstance(spec, Explorer)
    window = state["recent"][:spec.memory]
    trail = [(r - window[0][0] + me[0], c - window[0][1] + me[1]) for r, c in window]  # laid from me
    return ("softmax", STYLES[spec.style], [0.0 if a in trail else 1.0 for a in after])


def ref_probs(rec):
    kind, x, y = rec
    if kind == "softmax":
        m = max(x * u for u in y)
        e = [math.exp(x * u - m) for u in y]
        return np.array([v / sum(e) for v in e])
    return np.array([(1 - x) * (a in y) / len(y) + x / 5 for a in range(5)])


def ref_sample(rec, n, rng):
    """n actions drawn generatively: Gumbel-max for a softmax; noise, else a uniform intended move."""
    kind, x, y = rec
    if kind == "softmax":
        return np.argmax(x * np.asarray(y) + rng.gumbel(size=(n, 5)), axis=-1)
    return np.where(rng.random(n) < x, rng.integers(5, size=n), np.asarray(y)[rng.integers(len(y), size=n)])


def ref_look(spec, state, cell, picked):
    """The reference state after looking: cell now, colour index collected in the last step."""
    if isinstance(spec, Patrol) and cell == spec.waypoints[state["phase"]]:
        state["phase"] = (state["phase"] + 1) % len(spec.waypoints)
        state["advances"] += 1
    if isinstance(spec, Collector) and picked is not None and picked == state["want_index"](state["phase"]):
        state["phase"] = (state["phase"] + 1) % len(spec.order)
        state["advances"] += 1
    state["recent"].insert(0, cell)


def ref_states(spec, cfg):
    return {"phase": 0, "recent": [], "advances": 0,
            "want_index": lambda ph: cfg.color_names.index(spec.order[ph]) if isinstance(spec, Collector) else None}


# --- scenes ---------------------------------------------------------------------------------------

WORLDS = {
    "full": WorldConfig(n_agents=7, max_cycles=50),
    "walls-nonsquare-partial": WorldConfig(n_agents=7, width=9, height=12, view_radius=3, max_cycles=50,
                                           interior_walls=((4, 4), (6, 3), (6, 4))),
}


def family_rows(cfg, b, rng):
    """B rows: agents 0-4 one persona of each family (grids and hand-made specs), 5 a trait, 6 a mirror."""
    rows = []
    for _ in range(b):
        row = []
        for i, fam in enumerate(FAMILIES):
            grid = family_grid(fam, cfg, agent=i)
            row.append(grid[rng.integers(len(grid))])
        if rng.random() < 0.5:  # a hand-made patrol and collector, off the grids
            row[0] = Patrol(((1, 1), (cfg.height - 2, 1), (cfg.height - 2, cfg.width - 2)), 0.05)
            row[1] = Collector(("blue", "red", "green"), "erratic")
        row += [Trait("red", "approach", "casual"), Mirror(int(rng.integers(5)))]
        rows.append(row)
    return rows


def record(cfg, rows, steps, seed):
    """Run a scene; per step: the world snapshot, probabilities, a counterfactual query (persona k
    in situation perm[k]), and the world's accounting of gems collected."""
    log = {"snap": [], "probs": [], "as": [], "perm": [], "collected": []}
    rng = np.random.default_rng(seed)

    def on_act(step):
        b, n = step.actions.shape
        perm = np.stack([rng.permutation(n) for _ in range(b)])
        log["snap"].append((step.state.agent_pos.copy(), step.state.gem_pos.copy(), step.state.last_action.copy()))
        log["probs"].append(step.probs.copy())
        log["perm"].append(perm)
        log["as"].append(step.cast.probs_as(np.broadcast_to(np.arange(n), (b, n)), step.situations,
                                            step.cast_state, situation=perm))

    def on_step(t, state, _):
        log["collected"].append(state.collected.copy())

    ep = run_scene(cfg, rows, steps, seed, on_act=on_act, on_step=on_step)
    return ep, log


@pytest.mark.parametrize("name", list(WORLDS))
def test_vectorised_probabilities_and_counterfactuals_equal_the_per_agent_reference(name):
    cfg = WORLDS[name]
    rows = family_rows(cfg, 4, np.random.default_rng(3))
    steps = 40
    ep, log = record(cfg, rows, steps, seed=5)
    b, n = ep.actions.shape[1:]
    states = [[ref_states(rows[w][k], cfg) for k in range(5)] for w in range(b)]
    checked = 0
    for t in range(steps):
        for w in range(b):
            snap = tuple(x[w] for x in log["snap"][t])
            for k in range(5):
                before = log["collected"][t - 1][w, k] if t > 0 else None
                gained = None if before is None else np.flatnonzero(log["collected"][t][w, k] - before)
                picked = None if gained is None else (int(gained[0]) if gained.size else -1)
                ref_look(rows[w][k], states[w][k], tuple(snap[0][k]), picked)
            for k in range(5):
                spec = rows[w][k]
                np.testing.assert_allclose(log["probs"][t][w, k], ref_probs(recipe(spec, k, snap, states[w][k], cfg)),
                                           rtol=0, atol=1e-12, err_msg=f"{spec} at t={t}")
                i = log["perm"][t][w, k]
                np.testing.assert_allclose(log["as"][t][w, k], ref_probs(recipe(spec, i, snap, states[w][k], cfg)),
                                           rtol=0, atol=1e-12, err_msg=f"{spec} in agent {i}'s situation at t={t}")
                checked += 1
    assert checked == steps * b * 5
    # the phases moved: patrols reached waypoints and collectors collected what they wanted
    assert sum(states[w][0]["advances"] for w in range(b)) >= 2
    assert sum(states[w][1]["advances"] for w in range(b)) >= 2
    assert np.allclose(ep.probs.sum(-1), 1.0, atol=1e-12) and (ep.probs >= 0).all()


def test_pickups_equal_the_worlds_accounting_of_collected_gems():
    cfg = WorldConfig(n_agents=12, width=7, height=7, n_colors=3, gems_per_color=3, max_cycles=60)
    core = WorldCore(cfg)
    rows = [[Trait("red", "approach", "focused")] * 6 + [Trait(c, "none", "focused") for c in ("red", "green", "blue")] * 2]
    seen = []

    def on_act(step):
        seen.append((step.state.gem_pos.copy(), step.state.collected.copy(), step.state.t))

    ep = run_scene(cfg, rows * 3, 60, 2, on_act=on_act)
    total = 0
    for t, (gems, collected, tt) in enumerate(seen):
        after = ep.agent_pos[t + 1]
        nxt = seen[t + 1][1] if t + 1 < len(seen) else ep.collected
        got = pickups(core, gems, after, tt)
        gained = nxt - collected  # (B, N, C)
        want = np.where(gained.sum(-1) > 0, gained.argmax(-1), -1)
        np.testing.assert_array_equal(got, want)
        total += (want >= 0).sum()
    assert total > 20  # contested gems included: 12 agents on a 5x5 floor


@pytest.mark.parametrize("view_radius", [None, 2])
def test_cells_read_from_observations_equal_the_state_path(view_radius):
    cfg = WorldConfig(n_agents=6, width=9, height=8, view_radius=view_radius, interior_walls=((3, 3),))
    core = WorldCore(cfg)
    ep = run_scene(cfg, [Trait("red")] * 6, 10, 1)
    for t in (0, 5, 10):
        state = core.recorded_state(ep.agent_pos[t], ep.gem_pos[t], ep.actions[t - 1] if t else np.full((1, 6), -1))
        obs = core.observations(state)[0]  # (N, obs_dim)
        view = decode(obs, cfg)
        np.testing.assert_array_equal(view_post_move_cells(core, view), post_move_cells(core, state)[0])
        per = cfg.gems_per_color
        a = np.sort(view_gem_cells(core, view).reshape(6, cfg.n_colors, per), -1)
        s = np.sort(seen_gem_cells(core, state)[0].reshape(6, cfg.n_colors, per), -1)
        np.testing.assert_array_equal(a, s)


def test_probabilities_match_sampling():
    """Frequencies of n = 20000 generative draws (Gumbel-max, or noise then a uniform intended
    move) against the exact probabilities of the cast: max abs difference < 0.015 (the standard
    error of a frequency is at most 0.0035)."""
    cfg = WORLDS["full"]
    rows = family_rows(cfg, 2, np.random.default_rng(11))
    ep, log = record(cfg, rows, 12, seed=7)
    rng = np.random.default_rng(0)
    n = 20000
    worst = 0.0
    for t in (3, 11):
        for w in range(2):
            snap = tuple(x[w] for x in log["snap"][t])
            for k in range(5):
                spec = rows[w][k]
                state = ref_states(spec, cfg)
                if isinstance(spec, (Patrol, Collector, Explorer)):  # rebuild the state the run reached
                    for s in range(t + 1):
                        before = log["collected"][s - 1][w, k] if s else None
                        gained = None if before is None else np.flatnonzero(log["collected"][s][w, k] - before)
                        ref_look(spec, state, tuple(log["snap"][s][0][w, k]),
                                 None if gained is None else (int(gained[0]) if gained.size else -1))
                rec = recipe(spec, k, snap, state, cfg)
                freq = np.bincount(ref_sample(rec, n, rng), minlength=5) / n
                exact = log["probs"][t][w, k]
                worst = max(worst, float(np.abs(freq - exact).max()))
                assert np.abs(freq - exact).max() < 0.015, (spec, freq, exact)
    assert worst > 0  # draws, not the exact probabilities twice


# --- specs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_family_grids_round_trip_describe_and_are_distinct(family):
    cfg = WorldConfig()
    grid = family_grid(family, cfg, agent=2)
    assert len(set(grid)) == len(grid) >= 6
    for spec in grid:
        back = persona_from_json(json.loads(json.dumps(spec.to_json())))
        assert back == spec and hash(back) == hash(spec)
        text = spec.describe()
        assert text.startswith(("a ", "an ")) and " that " in text
    assert all(s.kind == family for s in grid)
    if family == "contrarian":
        assert {s.target for s in grid} == set(range(8)) - {2}


def test_describe_names_the_parameters():
    assert "(2, 2), (2, 8)" in Patrol(((2, 2), (2, 8))).describe()
    assert "red gems, then blue gems" in Collector(("red", "blue")).describe()
    assert "(3, 3)" in Territorial((3, 3), 2).describe() and "within 2 steps" in Territorial((3, 3), 2).describe()
    assert "agent 4" in Contrarian(4).describe()
    assert "last 8 cells" in Explorer(8, "casual").describe() and "casual" in Explorer(8, "casual").describe()


@pytest.mark.parametrize("bad, match", [
    (lambda: Patrol(((2, 2),)), "at least two"),
    (lambda: Patrol(((2, 2), (2, 2))), "same cell"),
    (lambda: Patrol(((2, 2), (3, -1))), "waypoints\\[1\\]"),
    (lambda: Collector(("red", "red")), "differ"),
    (lambda: Collector(("red", "mauve")), "order\\[1\\]"),
    (lambda: Territorial((1, 1), -1), "radius"),
    (lambda: Contrarian(-2), "target"),
    (lambda: Explorer(0), "memory"),
])
def test_bad_specs_name_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_cast_rejects_specs_that_do_not_fit_the_world():
    cfg = WorldConfig(n_agents=3, width=7, height=7, n_colors=2, interior_walls=((3, 3),))
    fill = [Trait(), Trait()]
    with pytest.raises(ValueError, match="waypoint \\(3, 3\\) is not a floor cell"):
        Cast([[Patrol(((1, 1), (3, 3))), *fill]], cfg)
    with pytest.raises(ValueError, match="home \\(9, 1\\)"):
        Cast([[Territorial((9, 1)), *fill]], cfg)
    with pytest.raises(ValueError, match="'blue' is not in this world"):
        Cast([[Collector(("red", "blue")), *fill]], cfg)
    with pytest.raises(ValueError, match="cannot contradict itself"):
        Cast([[Contrarian(0), *fill]], cfg)
    with pytest.raises(ValueError, match="agent 5, which does not exist"):
        Cast([[Contrarian(5), *fill]], cfg)


# --- the Bayes observer ---------------------------------------------------------------------------


def brute_force(cfg, ep, k, hyps, t_end, situation):
    """Posterior and predictive by enumeration: one cast per hypothesis (agent k replaced by it),
    replaying the recorded worlds through the cast's own state and probabilities."""
    core = WorldCore(cfg)
    b = ep.agent_pos.shape[1]
    log_lik = np.zeros((b, len(hyps)))
    preds = np.zeros((b, len(hyps), 5))
    for h, spec in enumerate(hyps.specs):
        rows = [list(r) for r in ep.personas]
        for r in rows:
            r[k] = spec
        cast = Cast(rows, cfg)
        cs = cast.initial_state()
        for t in range(t_end + 1):
            last = ep.actions[t - 1] if t else np.full(ep.actions.shape[1:], NO_ACTION)
            world = core.recorded_state(ep.agent_pos[t], ep.gem_pos[t], last, t=t)
            cs = cast.perceive(cs, core, world)
            from mirrorhall.envs.perception import situations
            sit = situations(core, world)
            if t == t_end:
                q = cast.probs_as(np.full((b, 1), k), sit, cs, situation=np.full((b, 1), situation))
                preds[:, h] = q[:, 0]
            else:
                p = cast.probs(sit, cs)[np.arange(b), k, ep.actions[t, :, k]]
                log_lik[:, h] += np.log(p)
    post = softmax(log_lik + hyps.log_prior)
    return post, np.einsum("bh,bha->ba", post, preds), np.einsum("h,bha->ba", np.exp(hyps.log_prior), preds)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_observer_equals_brute_force_enumeration(family):
    cfg = WorldConfig(n_agents=4, width=8, height=9, n_colors=3, max_cycles=20)
    k, steps = 1, 12
    hyps = FamilyHypotheses.grid(family, cfg, agent=k)
    rng = np.random.default_rng(4)
    rows = []
    for _ in range(3):
        truth = hyps.specs[rng.integers(len(hyps))]
        rows.append([Trait("red", "approach"), truth, Trait("green", "avoid", "focused"), Mirror(1)])
    ep = run_scene(cfg, rows, steps, 9)
    core = WorldCore(cfg)
    observer = FamilyObserver(hyps)
    belief = observer.prior(3)
    for t in range(steps + 1):
        last = ep.actions[t - 1] if t else np.full((3, 4), NO_ACTION)
        world = core.recorded_state(ep.agent_pos[t], ep.gem_pos[t], last, t=t)
        belief = observer.look(belief, core, world)
        if t < steps:
            belief = observer.update(belief, *situation_of(core, world, np.full(3, k)), ep.actions[t, :, k])
    pred = observer.predictive(belief, *situation_of(core, world, np.zeros(3, np.int64)))
    prior_pred = observer.predictive(belief, *situation_of(core, world, np.zeros(3, np.int64)), prior=True)
    post, want, want_prior = brute_force(cfg, ep, k, hyps, steps, situation=0)
    np.testing.assert_allclose(softmax(belief.log_post), post, atol=1e-10)
    np.testing.assert_allclose(pred, want, atol=1e-10)
    np.testing.assert_allclose(prior_pred, want_prior, atol=1e-10)
    truth = np.array([hyps.index(r[k]) for r in rows])
    assert (post[np.arange(3), truth] > 1.0 / len(hyps)).all()  # it learns from 12 steps


# --- populations and labels -----------------------------------------------------------------------


def test_lab_families_is_lab_plus_every_family_and_lab_is_unchanged():
    from mirrorhall.agents.populations import get_population

    lab, fam = get_population("lab"), get_population("lab-families")
    assert lab.mix == (("trait", 0.55), ("imitator", 0.15), ("mirror", 0.1), ("species", 0.2))
    assert lab.families("all") == () and lab.held_out_families == ()
    assert fam.mix[:4] == lab.mix and fam.families("train") == FAMILIES
    kinds = {s.kind for _ in range(60) for s in fam.sample_scene(8, 4, np.random.default_rng(_), world=WorldConfig())}
    assert set(FAMILIES) <= kinds and {"trait", "imitator", "mirror", "species"} <= kinds


@pytest.mark.parametrize("family", FAMILIES)
def test_held_out_family_split_is_disjoint(family):
    from mirrorhall.agents.populations import get_population

    pop = get_population(f"lab-minus-{family}")
    train, held = pop.families("train"), pop.families("held_out")
    assert held == (family,) and family not in train
    assert set(train) | set(held) == set(FAMILIES) == set(pop.families("all"))
    rng = np.random.default_rng(1)
    cfg = WorldConfig(n_agents=12)
    train_kinds = {s.kind for _ in range(150) for s in pop.sample_scene(12, 4, rng, "train", world=cfg)}
    probe_kinds = {s.kind for _ in range(150) for s in pop.sample_scene(12, 4, rng, "all", world=cfg)}
    assert family not in train_kinds and set(train) <= train_kinds
    assert family in probe_kinds


def test_generated_labels_of_family_personas_equal_the_reference():
    """SELF and OTHER(k) labels of a lab-families shard, where the persona asked about is a family
    persona, equal the per-agent reference (its state tracked from the recorded positions)."""
    from mirrorhall.imitation.generate import GenerateConfig
    from mirrorhall.imitation.labels import label_shard
    from mirrorhall.imitation.prompts import Kind

    gen = GenerateConfig(population="lab-families", episodes=4, episodes_per_shard=4, steps=16, agents=8, seed=3)
    lab = label_shard(gen, 0, 4)
    cfg = gen.world()
    core = WorldCore(cfg)
    b, n = lab.actions.shape[1:]
    fam = [[s.kind in FAMILIES for s in row] for row in lab.personas]
    assert sum(map(sum, fam)) >= 4
    states = [[ref_states(s, cfg) for s in row] for row in lab.personas]
    checked = {Kind.SELF: 0, Kind.OTHER: 0}
    for t in range(gen.steps):
        picked = pickups(core, lab.gem_pos[t - 1], lab.agent_pos[t], t - 1) if t else None
        for w in range(b):
            for k in range(n):
                if fam[w][k]:
                    ref_look(lab.personas[w][k], states[w][k], tuple(lab.agent_pos[t, w, k]),
                             None if picked is None else int(picked[w, k]))
        last = lab.actions[t - 1] if t else np.full((b, n), NO_ACTION)
        for s in np.flatnonzero(lab.t == t):
            w, i, kind = lab.world[s], lab.agent[s], Kind(lab.kind[s])
            k = i if kind == Kind.SELF else lab.target[s]
            if kind not in checked or not fam[w][k]:
                continue
            snap = (lab.agent_pos[t, w], lab.gem_pos[t, w], last[w])
            want = ref_probs(recipe(lab.personas[w][k], i, snap, states[w][k], cfg))
            np.testing.assert_allclose(lab.label[s], want, atol=1e-6)
            checked[kind] += 1
    assert checked[Kind.SELF] > 20 and checked[Kind.OTHER] > 5


# --- family personas described to an agent (DESCRIBE labels) ------------------------------------


@pytest.mark.parametrize("name", list(WORLDS))
def test_a_family_persona_described_to_its_own_agent_is_that_agents_policy(name):
    """A described persona has the state it would have had living the agent's own history, so
    described to the agent that plays it, it is that agent's own policy, at every step (patrols and
    collectors well past their first phase among them)."""
    cfg = WORLDS[name]
    rows = family_rows(cfg, 6, np.random.default_rng(11))
    specs = list(dict.fromkeys(s for row in rows for s in row if s.kind in FAMILIES))
    index = {s: f for f, s in enumerate(specs)}
    w, i = (np.array(x) for x in zip(*[(w, i) for w, row in enumerate(rows) for i, s in enumerate(row) if s in index],
                                     strict=True))
    f = np.array([index[rows[a][b]] for a, b in zip(w, i, strict=True)])
    described = DescribedFamilies(specs, cfg, len(rows))
    seen = {"steps": 0, "advanced": 0}

    def on_act(step):
        described.look(step.state, step.t)
        got = described.probs(f, w, i, step.situations, step.state)
        np.testing.assert_allclose(got, step.probs[w, i], atol=1e-12)
        seen["steps"] += 1
        seen["advanced"] += int((described.state.phase[w, i, f] > 0).sum())

    run_scene(cfg, rows, 40, 5, on_act=on_act)
    assert seen["steps"] == 40 and seen["advanced"] > 20


def test_generated_describe_labels_of_family_personas_equal_the_reference():
    """DESCRIBE labels of a lab-families shard that name a family persona (read back from the
    prompt's text) equal the per-agent reference: the persona, its state replayed from the asked
    agent's own recorded cells and pickups, in that agent's situation."""
    from mirrorhall.imitation.generate import GenerateConfig
    from mirrorhall.imitation.labels import label_shard
    from mirrorhall.imitation.prompts import Kind, parse_prompt

    gen = GenerateConfig(population="lab-families", episodes=4, episodes_per_shard=4, steps=24, agents=8, seed=5,
                         kind_weights=(0, 1, 0, 0, 0))
    lab = label_shard(gen, 0, 4)
    cfg = gen.world()
    core = WorldCore(cfg)
    b, n = lab.actions.shape[1:]
    picked = [None] + [pickups(core, lab.gem_pos[t - 1], lab.agent_pos[t], t - 1) for t in range(1, gen.steps)]
    checked = {f: 0 for f in FAMILIES}
    advanced = 0
    for s in np.flatnonzero(lab.kind == Kind.DESCRIBE):
        spec = parse_prompt(lab.prompt[s]).trait
        if spec.kind not in FAMILIES:
            continue
        w, i, t = lab.world[s], lab.agent[s], lab.t[s]
        assert getattr(spec, "target", None) != i, "a contrarian is never described to its own target"
        state = ref_states(spec, cfg)
        for tau in range(t + 1):
            ref_look(spec, state, tuple(lab.agent_pos[tau, w, i]), None if tau == 0 else int(picked[tau][w, i]))
        last = lab.actions[t - 1, w] if t else np.full(n, NO_ACTION)
        want = ref_probs(recipe(spec, i, (lab.agent_pos[t, w], lab.gem_pos[t, w], last), state, cfg))
        np.testing.assert_allclose(lab.label[s], want, atol=1e-6)
        checked[spec.kind] += 1
        advanced += state["advances"] > 0
    assert all(c >= 20 for c in checked.values()), checked
    assert advanced >= 20, "described patrols and collectors must have moved past their first phase"


def test_family_descriptions_are_drawn_by_the_mix_and_only_from_the_training_families():
    from mirrorhall.agents.populations import get_population
    from mirrorhall.imitation.labels import FamilyDescriptions

    cfg = WorldConfig(n_agents=8)
    rng = np.random.default_rng(0)
    agent = np.broadcast_to(np.arange(8)[:, None], (8, 40_000))
    for name, families in (("lab-families", FAMILIES), ("lab-minus-patrol", FAMILIES[1:])):
        pop = get_population(name)
        fd = FamilyDescriptions(pop, cfg, 41, 1)
        assert {s.kind for s in fd.specs} == set(families)
        assert fd.specs == [s for f in families for s in family_grid(f, cfg)]
        d = fd.draw(rng, agent)  # (8, 40000)
        total = 0.55 + 0.1 * len(families)
        assert abs((d < 41).mean() - 0.55 / total) < 0.01
        kinds = np.array(["trait"] * 41 + [s.kind for s in fd.specs])[d]
        for fam in families:
            assert abs((kinds == fam).mean() - 0.1 / total) < 0.01, (name, fam)
        target = np.array([-1] * 41 + [getattr(s, "target", -1) for s in fd.specs])[d]
        assert not (target == agent).any() and (target >= 0).any()
        # within a family, uniform over its grid (each contrarian target but the agent's own)
        counts = np.bincount(d[(kinds == "explorer")], minlength=d.max() + 1)
        explorer = counts[counts > 0]
        assert explorer.size == 6 and explorer.min() > 0.85 * explorer.mean()


# --- the imitate probe with family targets --------------------------------------------------------

from pathlib import Path  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / "checkpoints" / "reference"
needs_reference = pytest.mark.skipif(not (REFERENCE / "checkpoint.json").exists(),
                                     reason="reference checkpoint not built")


def _family_oracle(family, use_data):
    import re

    from mirrorhall.analysis.common import ModelProbe

    class FamilyOracle(ModelProbe):
        """Answers "behave as agent k" with the brute-force Bayes (or prior) predictive."""

        def query(self, scene, world, agent, t, prompts, situation=None):
            k = int(re.fullmatch(r"behave as agent (\d+)", prompts[0]).group(1))
            hyps = FamilyHypotheses.grid(family, scene.config, agent=k)
            _, post, prior = brute_force(scene.config, scene.episode, k, hyps, int(t[0]), situation=0)
            return (post if use_data else prior)[np.asarray(world)]

    return FamilyOracle(REFERENCE)


@needs_reference
@pytest.mark.parametrize("family", FAMILIES)
def test_imitate_family_targets_bayes_oracle_scores_one_and_prior_zero(family):
    from mirrorhall.analysis import imitate

    ks = (0, 1, 3)
    bayes = imitate.run(_family_oracle(family, True), "lab", episodes=7, seed=2, ks=ks, targets=family)
    prior = imitate.run(_family_oracle(family, False), "lab", episodes=7, seed=2, ks=ks, targets=family)
    assert bayes["pi_test"] == family and "closed_loop" not in bayes
    for c in bayes["conditions"]:
        assert c["ce_model"]["mean"] == pytest.approx(c["ce_bayes"]["mean"], abs=1e-9)
        if c["K"] > 0 and c["fraction"]["mean"] is not None:
            assert c["fraction"]["mean"] == pytest.approx(1.0, abs=1e-9)
    for c in prior["conditions"]:
        assert c["ce_model"]["mean"] == pytest.approx(c["ce_prior"]["mean"], abs=1e-9)
    k3 = bayes["conditions"][-1]
    assert k3["ce_bayes"]["mean"] <= k3["ce_prior"]["mean"] + 1e-12  # the ceiling is no worse than the prior


@needs_reference
def test_imitate_family_targets_on_the_reference_checkpoint_reports_k10_and_k20(tmp_path):
    from mirrorhall.analysis.common import ModelProbe
    from mirrorhall.analysis.report import read_result, run_probe, write_report

    r = run_probe("imitate", ModelProbe(REFERENCE), tmp_path, "lab", seed=0, episodes=14, targets="collector")
    s = r["summary"]
    assert set(s) == {"fraction_at_K10", "fraction_at_K20", "mean_fraction_K_ge_5"}
    assert all(np.isfinite(s[k]) for k in s)
    cond = {c["K"]: c for c in r["conditions"]}
    assert cond[20]["ce_bayes"]["mean"] < cond[20]["ce_prior"]["mean"]  # 20 steps of a collector tell something
    assert s["fraction_at_K20"] == cond[20]["fraction"]["mean"]
    assert read_result(tmp_path / "imitate.json", "imitate")["pi_test"] == "collector"
    assert "the collector family (24 hypotheses)" in write_report(tmp_path).read_text()


# --- the describe probe over the families ----------------------------------------------------------


def _describe_oracle(mode):
    from mirrorhall.analysis.common import ModelProbe
    from mirrorhall.imitation.prompts import parse_prompt

    class DescribeOracle(ModelProbe):
        """Answers a family description with the plain reference: the persona with its state
        replayed from the asked agent's own recorded history ("lived") or from its cell now only
        ("fresh"); "uniform", and anything not a family description, a uniform choice."""

        def query(self, scene, world, agent, t, prompts, situation=None):
            ep, cfg = scene.episode, scene.config
            core = WorldCore(cfg)
            picked = [None] + [pickups(core, ep.gem_pos[tau - 1], ep.agent_pos[tau], tau - 1)
                               for tau in range(1, int(np.max(t)) + 1)]
            out = []
            for w, i, tt, text in zip(world, agent, t, prompts, strict=True):
                spec = parse_prompt(text).trait
                if mode == "uniform" or spec.kind not in FAMILIES:
                    out.append(np.full(5, 0.2))
                    continue
                state = ref_states(spec, cfg)
                for tau in range(tt + 1) if mode == "lived" else [tt]:
                    ref_look(spec, state, tuple(ep.agent_pos[tau, w, i]),
                             None if picked[tau] is None or mode != "lived" else int(picked[tau][w, i]))
                last = ep.actions[tt - 1, w] if tt else np.full(cfg.n_agents, NO_ACTION)
                out.append(ref_probs(recipe(spec, i, (ep.agent_pos[tt, w], ep.gem_pos[tt, w], last), state, cfg)))
            return np.array(out)

    return DescribeOracle(REFERENCE)


@needs_reference
def test_describe_probe_scores_every_family_against_the_lived_reference_held_out_apart():
    """On lab-minus-explorer: the reference answered with each persona's lived state scores KL 0
    on every family; answered with a fresh state, the families with a state (patrol, explorer) show
    it and the stateless ones (territorial, contrarian) do not; a uniform answer scores the uniform
    KL. The held-out family is reported apart from the seen ones."""
    from mirrorhall.analysis import describe

    runs = {m: describe.run(_describe_oracle(m), "lab-minus-explorer", episodes=3, seed=1, queries_per_episode=16)
            for m in ("lived", "fresh", "uniform")}
    r = runs["lived"]
    assert r["families"] == {"seen": ["patrol", "collector", "territorial", "contrarian"], "held_out": ["explorer"],
                             "absent": []}
    fam = {c["family"]: c for c in r["conditions"] if c.get("family")}
    assert set(fam) == set(FAMILIES) and fam["explorer"]["split"] == "held_out" and fam["patrol"]["split"] == "seen"
    assert [c["condition"] for c in r["conditions"]][:3] == list(describe.CONDITIONS)
    for c in fam.values():
        assert c["kl"]["mean"] == pytest.approx(0.0, abs=1e-9) and c["queries"] == 48
        assert c["kl_uniform"]["mean"] > 0.1
    fresh = {c["family"]: c["kl"]["mean"] for c in runs["fresh"]["conditions"] if c.get("family")}
    assert fresh["patrol"] > 0.05 and fresh["explorer"] > 0.05, fresh
    assert fresh["territorial"] == pytest.approx(0.0, abs=1e-9) and fresh["contrarian"] == pytest.approx(0.0, abs=1e-9)
    for c in runs["uniform"]["conditions"]:
        if c.get("family"):
            assert c["kl"]["mean"] == pytest.approx(c["kl_uniform"]["mean"], abs=1e-9)
    s = runs["uniform"]["summary"]
    assert s["kl_families_held_out"] == pytest.approx(fam["explorer"]["kl_uniform"]["mean"], abs=1e-9)
    pool = runs["uniform"]["family_pools"]
    assert pool["seen"]["families"] == r["families"]["seen"] and pool["held_out"]["families"] == ["explorer"]
    assert s["kl_families_seen"] == pytest.approx(np.mean([fam[f]["kl_uniform"]["mean"] for f in r["families"]["seen"]]))
    # the trait conditions are the ones the probe always had; a family's words the model never read are named
    assert all(c["kl"]["mean"] > 0 for c in r["conditions"][:3])
    tokenizer = _describe_oracle("lived").tokenizer
    unread = [w for w in ("patrolling", "loop") if w not in tokenizer.index]
    assert set(unread) <= set(fam["patrol"]["unread_words"])


@needs_reference
def test_describe_probe_targets_one_family_and_its_report_says_which_families(tmp_path):
    from mirrorhall.analysis.report import read_result, run_probe, write_report
    from mirrorhall.errors import ConfigError

    r = run_probe("describe", _describe_oracle("lived"), tmp_path, "lab", seed=0, episodes=2, targets="collector")
    assert [c["condition"] for c in r["conditions"]] == ["family:collector"]
    assert r["conditions"][0]["split"] == "absent" and r["families"]["absent"] == ["collector"]
    assert r["targets"] == {} and r["summary"]["kl_seen"] is None and r["describe_targets"] == "collector"
    assert read_result(tmp_path / "describe.json", "describe")["family_pools"]["absent"]["families"] == ["collector"]
    text = write_report(tmp_path).read_text()
    assert "| collector | absent | 0.000 [0.000, 0.000]" in text and "Families covered: absent: collector" in text
    assert "Target: seen combinations" not in text
    r = run_probe("describe", _describe_oracle("uniform"), tmp_path, "lab-minus-patrol", seed=0, episodes=2)
    text = write_report(tmp_path).read_text()
    assert "Families covered: seen: collector, territorial, contrarian, explorer (KL" in text
    assert "held out: patrol (KL" in text and "| patrol | held out |" in text
    assert text.index("| explorer | seen |") < text.index("| patrol | held out |")
    with pytest.raises(ConfigError, match="unknown targets"):
        run_probe("describe", _describe_oracle("uniform"), tmp_path, "lab", episodes=2, targets="pirates")


def test_probe_targets_are_checked_in_one_line():
    from mirrorhall.commands.probe import ProbeConfig
    from mirrorhall.errors import ConfigError

    with pytest.raises(ConfigError, match="applies to the imitate and describe probes only"):
        ProbeConfig(name="second_order", checkpoint="ck", out="out", targets="patrol")
    assert ProbeConfig(name="describe", checkpoint="ck", out="out", targets="patrol").targets == "patrol"
    with pytest.raises(ConfigError, match="--prompt runs on describe's seen trait combinations"):
        ProbeConfig(name="describe", checkpoint="ck", out="out", targets="patrol", prompt=("be {desc}",))
    with pytest.raises(ConfigError, match="--targets must be one of traits, patrol, collector"):
        ProbeConfig(name="imitate", checkpoint="ck", out="out", targets="pirates")
    assert ProbeConfig(name="imitate", checkpoint="ck", out="out", targets="explorer").targets == "explorer"
