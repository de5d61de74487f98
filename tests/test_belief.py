"""False belief: world interventions, believer personas, belief tracking and the false_belief probe.

- Events are deterministic, move exactly the gems they name at exactly their step, show in
  observations, ``state()``, frames and recorded episodes, and a bad event is a ValueError naming
  its field (one line and exit 2 on the command line).
- Believer probabilities equal a per-agent plain-loop reference (memory rebuilt by scanning the
  history cell by cell, utilities and softmax written out), and equal trait personas under full
  view; the memoryless control equals the trait persona everywhere.
- The Bayes observer's memory tracking and posterior equal brute-force enumeration on small grids.
- The probe with oracle observers: the truth (knows the subject's memory and persona) scores an
  effect ratio of 1 within 0.15 with 1 inside its interval; an observer that ignores views (it
  takes the subject to know where every gem is) scores below 0.25.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mirrorhall.agents.bayes import BeliefHypotheses, BeliefObserver, post_move_cells, track_memory
from mirrorhall.agents.personas import (
    GEM_WEIGHT,
    SOCIAL_WEIGHT,
    STYLES,
    Believer,
    Memoryless,
    Trait,
    persona_from_json,
)
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import Episode, run_scene
from mirrorhall.analysis import false_belief as fb
from mirrorhall.analysis.common import Scene
from mirrorhall.cli import main
from mirrorhall.envs import mirrorhall_v0
from mirrorhall.envs.core import MOVES, WorldConfig, WorldCore, WorldEvent, check_events
from mirrorhall.envs.render import EMPHASIS_RGB, render_rgb
from mirrorhall.imitation.prompts import Kind, parse_prompt, render

SWAP = {"step": 3, "kind": "swap", "gem": "red:0", "other": "blue:1"}


# --- events -----------------------------------------------------------------------------------------


def _rollout(env, seed, options, steps=8):
    obs, infos = env.reset(seed=seed, options=options)
    out = [(np.stack(list(obs.values())), env.state(), env.world_state.gem_pos.copy(), infos["agent_0"])]
    rng = np.random.default_rng(0)
    for _ in range(steps):
        acts = {a: int(rng.integers(5)) for a in env.agents}
        obs, _, _, _, infos = env.step(acts)
        out.append((np.stack(list(obs.values())), env.state(), env.world_state.gem_pos.copy(), infos["agent_0"]))
    return out


def test_a_swap_moves_exactly_its_gems_at_its_step_and_shows_everywhere():
    env = mirrorhall_v0.parallel_env(n_agents=3, view_radius=2, max_cycles=20)
    plain = _rollout(env, 5, None)
    swapped = _rollout(env, 5, {"events": [SWAP]})
    again = _rollout(env, 5, {"events": [SWAP]})
    red0, blue1 = 0, 5  # colour-major: gems 0, 1 red; 4, 5 blue
    for t, ((o0, s0, g0, i0), (o1, s1, g1, i1), (o2, s2, g2, _)) in enumerate(zip(plain, swapped, again, strict=True)):
        assert np.array_equal(o1, o2) and np.array_equal(s1, s2) and np.array_equal(g1, g2)  # deterministic
        assert ("events" in i1) == (t == 3) and "events" not in i0
        if t < 3:  # nothing changes before the event
            assert np.array_equal(g0, g1) and np.array_equal(o0, o1) and np.array_equal(s0, s1)
        if t == 3:
            expect = g0.copy()
            expect[0, [red0, blue1]] = g0[0, [blue1, red0]]
            if np.array_equal(plain[2][2], plain[3][2]):  # no gem collected at step 3: exactly swapped
                assert np.array_equal(g1, expect)
            assert not np.array_equal(s0, s1)  # the global state shows it
            assert i1["events"] == [{"step": 3, "kind": "swap", "gem": 0, "other": 5}]


def test_no_events_is_the_episode_there_always_was():
    env = mirrorhall_v0.parallel_env(n_agents=4, view_radius=2)
    a, b, c = _rollout(env, 9, None), _rollout(env, 9, {"events": []}), _rollout(env, 9, {"valued": {}})
    for x, y, z in zip(a, b, c, strict=True):
        assert all(np.array_equal(u, v) and np.array_equal(u, w) for u, v, w in zip(x[:3], y[:3], z[:3], strict=True))
    cfg = WorldConfig(n_agents=4, view_radius=2, max_cycles=30)
    personas = [Trait("red"), Trait("blue", "avoid"), Trait(), Trait("green", "approach", "focused")]
    e0, e1 = run_scene(cfg, personas, 20, 3), run_scene(cfg, personas, 20, 3, events=[])
    assert e0.digest() == e1.digest() and e1.events == ()


def test_run_scene_records_per_world_schedules_and_the_stored_positions_show_them():
    cfg = WorldConfig(n_agents=2, view_radius=2, max_cycles=12)
    rows = [[Trait(), Trait()], [Trait(), Trait()]]
    sched = [[{"step": 4, "kind": "swap", "gem": 0, "other": 6}], []]
    ep = run_scene(cfg, rows, 10, 1, events=sched)
    assert ep.events[0] == (WorldEvent(4, "swap", 0, other=6),) and ep.events[1] == ()
    base = run_scene(cfg, rows, 10, 1)
    assert ep.digest() != base.digest()
    assert np.array_equal(ep.gem_pos[:4], base.gem_pos[:4])
    if np.array_equal(base.gem_pos[3, 0], base.gem_pos[4, 0]):  # nothing collected at step 4
        assert np.array_equal(ep.gem_pos[4, 0, [0, 6]], base.gem_pos[4, 0, [6, 0]])
    assert np.array_equal(ep.gem_pos[:, 1], base.gem_pos[:, 1])  # the other world is untouched


def test_move_events_and_the_core_method():
    cfg = WorldConfig(n_agents=1, width=6, height=5, n_colors=2, gems_per_color=1, max_cycles=5)
    core = WorldCore(cfg)
    st = core.recorded_state(np.array([[[1, 1]]]), np.array([[[2, 2], [3, 3]]]), np.array([[-1]]))
    ev = check_events([{"step": 0, "kind": "move", "gem": "green:0", "to": [1, 4]}], cfg)
    assert core.apply_events(st, ev) == list(ev)
    assert st.gem_pos[0].tolist() == [[2, 2], [1, 4]]
    for to, what in (([1, 1], "an agent"), ([2, 2], "another gem")):
        st2 = core.recorded_state(np.array([[[1, 1]]]), np.array([[[2, 2], [3, 3]]]), np.array([[-1]]))
        with pytest.raises(ValueError, match=rf"\.to: cell .* holds {what}"):
            core.apply_events(st2, check_events([{"step": 0, "kind": "move", "gem": 1, "to": to}], cfg))
    st.t = 3
    assert core.apply_events(st, ev) == []  # not its step


@pytest.mark.parametrize("event, field", [
    ({"step": 1, "kind": "swap", "gem": 99, "other": 0}, r"events\[0\]\.gem: unknown gem"),
    ({"step": 1, "kind": "swap", "gem": "mauve:0", "other": 0}, r"events\[0\]\.gem: unknown gem"),
    ({"step": 1, "kind": "swap", "gem": 0, "other": 0}, r"events\[0\]\.other"),
    ({"step": 1, "kind": "swap", "gem": 0}, r"events\[0\]\.other is missing"),
    ({"step": 40, "kind": "swap", "gem": 0, "other": 2}, r"events\[0\]\.step must be in 0\.\.19"),
    ({"step": -1, "kind": "swap", "gem": 0, "other": 2}, r"events\[0\]\.step"),
    ({"step": 1, "kind": "move", "gem": 0, "to": [0, 3]}, r"events\[0\]\.to: cell \(0, 3\) is a wall"),
    ({"step": 1, "kind": "move", "gem": 0, "to": [50, 3]}, r"events\[0\]\.to row"),
    ({"step": 1, "kind": "teleport", "gem": 0}, r"events\[0\]\.kind must be one of move, swap"),
    ({"step": 1, "kind": "swap", "gem": 0, "other": 1, "when": 2}, r"events\[0\]: unknown field"),
    ("swap", r"events\[0\] must be an object"),
])
def test_a_bad_event_names_its_field(event, field):
    cfg = WorldConfig(max_cycles=20)
    with pytest.raises(ValueError, match=field):
        check_events([event], cfg)
    env = mirrorhall_v0.parallel_env(max_cycles=20)
    with pytest.raises(ValueError, match=r"options\['events'\]" + field[len("events"):]):
        env.reset(seed=0, options={"events": [event]})


def test_a_bad_event_on_the_command_line_is_one_line_and_exit_2(capsys):
    bad = json.dumps([{"step": 2, "kind": "swap", "gem": "red:7", "other": 0}])
    assert main(["run", "--agents", "2", "--steps", "4", "--events", bad, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--events[0].gem: unknown gem 'red:7'" in err[0]
    assert main(["run", "--agents", "2", "--steps", "4", "--events", "[", "--no-progress"]) == 2
    assert main(["run", "--agents", "2", "--steps", "4", "--no-progress", "--events", json.dumps([SWAP])]) == 0


def test_the_frame_of_a_swap_marks_it():
    cfg = WorldConfig(n_agents=2, max_cycles=10)
    ep = run_scene(cfg, [Trait(), Trait()], 4, 2, events=[SWAP])
    scene = Scene.from_episode(ep)
    sched = ep.events[0]
    marked = [render_rgb(cfg, scene.states[t], events=sched) for t in range(5)]
    assert len({f.shape for f in marked}) == 1  # one size for the whole animation
    amber = [(f == np.array(EMPHASIS_RGB, np.uint8)).all(-1).sum() for f in marked]
    assert amber[3] > 0 and all(a == 0 for t, a in enumerate(amber) if t != 3)


# --- believers -----------------------------------------------------------------------------------


def _plain_believer_probs(cfg: WorldConfig, ep: Episode, w: int, i: int, spec, remember: bool = True) -> np.ndarray:
    """(T, 5) agent i's probabilities by plain loops: memory scanned cell by cell, utility, softmax.
    ``remember`` False: the memory holds only what it sees now (the memoryless control)."""
    h, wd, r = cfg.height, cfg.width, cfg.view_radius
    walls = cfg.walls()
    color = cfg.color_names.index(spec.likes)
    per = cfg.gems_per_color
    memory = {}  # cell -> colour last seen there (None: empty)
    out = []
    for t in range(ep.steps):
        if not remember:
            memory = {}
        me = ep.agent_pos[t, w, i]
        gems = {tuple(ep.gem_pos[t, w, g]): g // per for g in range(cfg.n_gems)}
        for row in range(h):
            for col in range(wd):
                if r is None or max(abs(row - me[0]), abs(col - me[1])) <= r:
                    memory[(row, col)] = gems.get((row, col))
        believed = [cell for cell, c in memory.items() if c == color]
        others = [ep.agent_pos[t, w, j] for j in range(cfg.n_agents) if j != i and
                  (r is None or np.abs(ep.agent_pos[t, w, j] - me).max() <= r)]
        u = []
        for move in MOVES:
            nxt = me + move
            if walls[nxt[0], nxt[1]]:
                nxt = me
            gem = -GEM_WEIGHT * min(abs(nxt[0] - a) + abs(nxt[1] - b) for a, b in believed) if believed else 0.0
            social = 0.0
            if others and spec.social != "none":
                near = min(abs(nxt[0] - o[0]) + abs(nxt[1] - o[1]) for o in others)
                social = (-SOCIAL_WEIGHT if spec.social == "approach" else SOCIAL_WEIGHT) * near
            u.append(STYLES[spec.style] * (gem + social))
        m = max(u)
        e = [math.exp(x - m) for x in u]
        out.append([x / sum(e) for x in e])
    return np.array(out)


def test_believer_probabilities_match_a_plain_loop_reference():
    cfg = WorldConfig(n_agents=4, width=9, height=7, view_radius=2, max_cycles=40, interior_walls=((3, 4),))
    rows = [[Believer("red", "none", "focused"), Believer("blue", "avoid", "casual"),
             Memoryless("red", "approach", "erratic"), Trait("green")],
            [Trait("yellow", "avoid"), Believer("green", "approach", "erratic"), Believer("yellow"), Trait()]]
    events = [[{"step": 6, "kind": "swap", "gem": "red:0", "other": "blue:0"}],
              [{"step": 2, "kind": "swap", "gem": "green:1", "other": "yellow:0"}]]
    ep = run_scene(cfg, rows, 30, 7, events=events)
    checked = 0
    for w, row in enumerate(rows):
        for i, spec in enumerate(row):
            if isinstance(spec, Believer):
                np.testing.assert_allclose(ep.probs[:, w, i], _plain_believer_probs(cfg, ep, w, i, spec), atol=1e-12)
                checked += 1
    assert checked == 4
    # the memoryless control acts exactly as the trait persona with the same preferences
    traits = [[getattr(s, "trait", s) if isinstance(s, Memoryless) else s for s in row] for row in rows]
    ep2 = run_scene(cfg, traits, 30, 7, events=events)
    np.testing.assert_array_equal(ep.probs[:, 0, 2], ep2.probs[:, 0, 2])


def test_believers_are_trait_personas_under_full_view_and_differ_under_partial_view():
    rows = [Believer("red"), Believer("blue", "approach", "casual"), Trait("green"), Believer("yellow", "avoid", "erratic")]
    as_traits = [getattr(s, "trait", s) for s in rows]
    full = WorldConfig(n_agents=4, max_cycles=30)
    assert run_scene(full, rows, 25, 4).digest() == run_scene(full, as_traits, 25, 4).digest()
    part = WorldConfig(n_agents=4, view_radius=2, max_cycles=30)
    assert not np.array_equal(run_scene(part, rows, 25, 4).probs, run_scene(part, as_traits, 25, 4).probs)


def test_believer_specs_round_trip_and_are_described_and_parsed():
    for spec in (Believer("red", "avoid", "erratic"), Memoryless("blue")):
        assert persona_from_json(json.loads(json.dumps(spec.to_json()))) == spec
        prompt = render(Kind.DESCRIBE, 0, trait=spec)
        assert parse_prompt(prompt.text) == prompt and spec.describe() in prompt.text
    with pytest.raises(ValueError, match="likes"):
        Believer("none")
    with pytest.raises(ValueError, match="social"):
        Memoryless("red", "follow")


# --- the Bayes observer tracks beliefs from the geometry of views --------------------------------


def test_belief_tracking_and_posterior_match_brute_force_enumeration():
    cfg = WorldConfig(n_agents=2, width=6, height=5, n_colors=2, gems_per_color=1, view_radius=1, max_cycles=20)
    core = WorldCore(cfg)
    subjects = [Believer("red", "none", "focused"), Believer("green", "none", "casual"),
                Memoryless("red", "none", "erratic")]
    rows = [[s, Trait()] for s in subjects]
    events = [[{"step": 3, "kind": "swap", "gem": 0, "other": 1}]] * 3
    ep = run_scene(cfg, rows, 12, 11, events=events)
    scene = Scene.from_episode(ep)
    b = len(rows)
    who = np.zeros(b, np.int64)
    memories = track_memory(core, scene.states, who)
    hyp = BeliefHypotheses.grid(cfg)  # 2 families x 2 colours x 3 styles
    obs = BeliefObserver(hyp)
    log_post = obs.prior((b,))
    for t in range(ep.steps):
        sit = scene.situation(t, np.arange(b), who)
        after = post_move_cells(core, scene.states[t], who)
        log_post = obs.update(log_post, sit, memories[t], after, ep.actions[t, :, 0])
    post = np.exp(log_post - log_post.max(-1, keepdims=True))
    post /= post.sum(-1, keepdims=True)
    for w in range(b):
        # memory: brute force over the history, cell by cell (the last time the subject saw it)
        for t in range(ep.steps):
            for cell in range(cfg.height * cfg.width):
                rc = divmod(cell, cfg.width)
                last = None
                for u in range(t + 1):
                    if np.abs(ep.agent_pos[u, w, 0] - rc).max() <= cfg.view_radius:
                        last = u
                for c in range(cfg.n_colors):
                    expect = last is not None and tuple(ep.gem_pos[last, w, c]) == rc
                    assert memories[t][w, c, cell] == expect
        # posterior: every hypothesis's likelihood by the plain loop
        like = []
        for spec in hyp.specs:
            p = _plain_believer_probs(cfg, ep, w, 0, Believer(*spec.combo), remember=isinstance(spec, Believer))
            like.append(np.prod(p[np.arange(ep.steps), ep.actions[:, w, 0]]))
        like = np.array(like) / np.sum(like)
        np.testing.assert_allclose(post[w], like, rtol=1e-9, atol=1e-12)


# --- the lab-belief population -----------------------------------------------------------------


def test_lab_belief_samples_viewers_and_swaps_and_lab_draws_no_events():
    pop, lab = get_population("lab-belief"), get_population("lab")
    rng = np.random.default_rng(0)
    cfg = WorldConfig(view_radius=3, max_cycles=40)
    kinds = {s.kind for _ in range(40) for s in pop.sample_scene(8, 4, rng)}
    assert {"believer", "memoryless", "trait"} <= kinds
    swaps = [pop.sample_events(cfg, 40, rng) for _ in range(400)]
    rate = np.mean([len(s) > 0 for s in swaps])
    assert abs(rate - pop.swap_rate) < 0.08  # 400 draws: the standard error is 0.025
    for s in swaps:
        for ev in s:  # two gems of different colours, at a step inside the episode
            assert ev.gem // 2 != ev.other // 2 and 1 <= ev.step < 40
    state = rng.bit_generator.state
    assert lab.sample_events(cfg, 40, rng) == () and rng.bit_generator.state == state


# --- the probe with oracle observers ---------------------------------------------------------------


def test_probe_oracles_truth_scores_ratio_one_and_a_view_blind_observer_about_zero():
    truth = fb.evaluate(fb.truth, episodes=64, seed=0)
    s = truth["summary"]
    lo, hi = s["effect_ratio_ci95"]
    assert abs(s["effect_ratio"] - 1) < 0.15 and lo <= 1 <= hi, s
    assert s["effect_bayes"] > 0.2 and s["effect_bayes_ci95"][0] > 0  # the scenes carry a real effect
    assert s["control_within_bayes_interval"] and abs(s["control_effect_bayes"]) < 0.02
    # an exact observer not told the family falls short of Bayes, its control effect far from 0:
    # before the swap believers and memoryless subjects act alike in these scenes
    assert 0.4 < s["watching_ceiling"] < 0.9 and s["watching_ceiling_ci95"][1] < 0.9, s
    assert s["control_effect_bayes_watching_ci95"][0] > 0.05, s
    blind = fb.evaluate(fb.blind_to_views, episodes=64, seed=0)["summary"]
    assert abs(blind["effect_ratio"]) < 0.25, blind
    far = [c for c in truth["curve"] if c["subject"] == "believer" and not c["seen"] and c["effect_bayes"]["n"] >= 5]
    near = [c for c in truth["curve"] if c["subject"] == "believer" and c["seen"] and c["distance"] >= 2]
    assert far and near
    assert min(c["effect_bayes"]["mean"] for c in far) > max(c["effect_bayes"]["mean"] for c in near)


REFERENCE = Path(__file__).resolve().parents[1] / "checkpoints" / "reference"


@pytest.mark.skipif(not (REFERENCE / "checkpoint.json").exists(), reason="checkpoints/reference is not in this checkout")
def test_the_probe_on_the_reference_writes_json_plot_and_a_report_section(tmp_path):
    from mirrorhall.analysis.common import ModelProbe
    from mirrorhall.analysis.report import read_result, run_probe, write_report

    r = run_probe("false_belief", ModelProbe(REFERENCE), tmp_path, "lab", seed=0, episodes=12)
    for key in ("effect_model", "effect_bayes", "effect_ratio", "control_effect_model", "control_effect_bayes"):
        assert key in r["summary"]
    assert read_result(tmp_path / "false_belief.json", "false_belief")["probe"] == "false_belief"
    assert (tmp_path / "false_belief.png").stat().st_size > 1000
    report = write_report(tmp_path).read_text()
    assert "## false_belief" in report and "Target: effect ratio model / Bayes >= 0.9" in report


def test_lab_belief_dataset_records_its_events_and_labels_believers(tmp_path):
    from mirrorhall.imitation.generate import GenerateConfig, generate
    from mirrorhall.imitation.shards import EVENTS_SCHEMA_VERSION, Dataset

    cfg = GenerateConfig(population="lab-belief", episodes=6, episodes_per_shard=3, steps=14, view_radius=2, seed=4)
    generate(cfg, tmp_path / "d")
    data = Dataset(tmp_path / "d")
    assert data.schema_version == EVENTS_SCHEMA_VERSION
    episodes = list(data.episodes())
    swapped = [e for e in episodes if e.events]
    assert swapped and all(len(e.events) == 1 and e.events[0].kind == "swap" for e in swapped)
    for e in swapped:
        ev = e.events[0]
        before, after = e.gem_pos[ev.step - 1], e.gem_pos[ev.step]
        moved = ~(before == after).all(-1)
        assert moved[ev.gem] or moved[ev.other]  # the stored positions show the swap
    kinds = {p.kind for e in episodes for p in e.personas}
    assert "believer" in kinds
    described = [parse_prompt(p) for e in episodes for p in e.prompt if "remembers where" in p]
    assert described and all(isinstance(p.trait, Believer) for p in described)
    for e in episodes:  # every label a distribution
        np.testing.assert_allclose(e.label.sum(-1), 1.0, atol=1e-5)


@pytest.mark.slow  # generates a small lab-belief dataset
def test_other_of_a_believer_acts_on_what_the_asker_remembers(tmp_path):
    """OTHER(k) of a believer k in agent i's situation: k's preferences acting on i's knowledge of
    the world (i's memory, rebuilt here from i's view at every step), exactly as a described
    believer does; the same label computed with k's own memory differs somewhere (the rule is
    not vacuous)."""
    from mirrorhall.agents.bayes import TraitBases, believer_probs, trait_codes
    from mirrorhall.envs.perception import situations
    from mirrorhall.imitation.generate import GenerateConfig, generate
    from mirrorhall.imitation.shards import Dataset

    cfg = GenerateConfig(population="lab-belief", episodes=8, episodes_per_shard=4, steps=20, view_radius=2, seed=7)
    generate(cfg, tmp_path / "d")
    data = Dataset(tmp_path / "d")
    core = WorldCore(data.world)
    checked = differs = 0
    for ep in data.episodes():
        ws = ep.world_states(data.world)  # every step as one batch; sliced into one state a step
        states = [core.recorded_state(ws.agent_pos[t: t + 1], ws.gem_pos[t: t + 1], ws.last_action[t: t + 1],
                                      ws.valued[t: t + 1], t) for t in range(ws.agent_pos.shape[0])]
        for s in np.flatnonzero(ep.kind == Kind.OTHER):
            k, i, t = int(ep.target[s]), int(ep.agent[s]), int(ep.t[s])
            persona = ep.personas[k]
            if not isinstance(persona, Believer):
                continue
            memory = {a: track_memory(core, states[: t + 1], [a])[t] for a in (i, k)}  # (1, C, H*W)
            likes, social, beta = trait_codes(persona.trait, data.world.n_colors, data.world.n_agents)
            tb = TraitBases(situations(core, states[t]).take((np.array([0]), np.array([i]))))
            after = post_move_cells(core, states[t], [i])
            want = {a: believer_probs(data.world, tb, np.array([likes]), np.array([social]), np.array([beta]),
                                      memory[a], after)[0] for a in (i, k)}
            np.testing.assert_allclose(ep.label[s], want[i], atol=1e-5)
            checked += 1
            differs += not np.allclose(want[i], want[k], atol=1e-3)
    assert checked >= 20 and differs >= 1, (checked, differs)


BELIEF = Path(__file__).resolve().parents[1] / "checkpoints" / "belief"


@pytest.mark.slow
@pytest.mark.skipif(not (BELIEF / "checkpoint.json").exists(), reason="checkpoints/belief is not in this checkout")
def test_the_shipped_belief_checkpoint_reads_perspective_and_credits_an_unseen_swap(tmp_path):
    """checkpoints/belief: under 5 MB, a lab-belief model with the perspective columns; on 40
    layouts it credits an unseen swap with a false belief, to memoryless subjects too (it cannot
    tell them apart before the swap, as Bayes watching cannot), where the reference, which has no
    perspective columns, credits memoryless subjects with nothing."""
    from mirrorhall.analysis.common import ModelProbe
    from mirrorhall.analysis.report import run_probe

    assert sum(p.stat().st_size for p in BELIEF.iterdir()) < 5e6
    probe = ModelProbe(BELIEF)
    assert probe.model.config.perspective and probe.meta["dataset"]["population"] == "lab-belief"
    s = run_probe("false_belief", probe, tmp_path, "lab-belief", seed=0, episodes=40)["summary"]
    assert s["effect_model_ci95"][0] > 0.03 and s["control_effect_model_ci95"][0] > 0.01, s
    assert s["control_effect_model"] < s["control_effect_bayes_watching"], s
