"""compare-direct's vectorised PPO learners: what they read, what they are paid, that they learn, and
the ratio machinery. No Ray.

Learning gate (the tiny run CI keeps): each learner, trained for ``GATE_STEPS`` env steps on a
focused persona, must lower its held-out cross-entropy against pi_test by at least
``GATE_NATS`` below its untrained value.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mirrorhall.agents.bayes import HypothesisSet  # noqa: E402
from mirrorhall.agents.cast import trait_probs  # noqa: E402
from mirrorhall.agents.personas import Trait  # noqa: E402
from mirrorhall.analysis.compare_direct.ratio import aggregate, carried, steps_to_reach  # noqa: E402
from mirrorhall.analysis.compare_direct.vecppo import (  # noqa: E402
    FlatPolicy,
    ImitationWorlds,
    RelationalPolicy,
    eval_iterations,
    relational_inputs,
    train_run,
)
from mirrorhall.envs.core import WorldConfig  # noqa: E402
from mirrorhall.envs.perception import entity_features, situations  # noqa: E402

TARGET = Trait("red", "avoid", "focused")
GATE_STEPS = 6144
GATE_NATS = 0.02


@pytest.mark.parametrize("world", [WorldConfig(n_agents=8, max_cycles=20),
                                   WorldConfig(n_agents=5, width=9, height=7, n_colors=3, view_radius=2,
                                               interior_walls=((3, 4),), max_cycles=20)],
                         ids=["full_view", "partial_view_walls"])
def test_relational_learner_reads_exactly_the_perception_features(world):
    """The relational learner's input, computed from its own observation, is bit for bit the
    perception module's relational features of agent 0 as it sees itself, from the world state
    (``entity_features``), which is the model's ``query``; over an episode boundary."""
    env = ImitationWorlds(world, TARGET, "crowd", 4, np.random.default_rng(1))
    obs = env.reset()
    rng = np.random.default_rng(2)
    for _ in range(world.max_cycles + 5):
        np.testing.assert_array_equal(obs, env.core.observations(env.state)[:, 0])  # the learner is agent 0
        got = RelationalPolicy.inputs(obs, env.core)  # (B, 5, F)
        feats, _ = entity_features(env.core, env.state, observers=[0])  # (B, 1, N, 5, F)
        want = feats[:, 0, 0]
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()
        assert np.array_equal(got, relational_inputs(obs, env.core))
        obs, _, _ = env.step(rng.integers(5, size=4))
    np.testing.assert_array_equal(FlatPolicy.inputs(obs, env.core), obs.astype(np.float32))


def test_imitation_worlds_pay_log_pi_test_in_the_learners_situation():
    world = WorldConfig(n_agents=4, width=8, height=6, max_cycles=10)
    env = ImitationWorlds(world, TARGET, "crowd", 3, np.random.default_rng(3))
    env.reset()
    code = HypothesisSet([TARGET], 4, 4)
    rng = np.random.default_rng(4)
    firsts = [row[1:] for row in env.cast.specs]
    for t in range(12):
        sit = situations(env.core, env.state).take((slice(None), 0))
        want = trait_probs(sit, np.repeat(code.likes, 3), np.repeat(code.social, 3), np.repeat(code.beta, 3))
        a = rng.integers(5, size=3)
        _, reward, pi_test = env.step(a)
        np.testing.assert_allclose(pi_test, want, rtol=0, atol=1e-12)
        np.testing.assert_allclose(reward, np.maximum(np.log(want[np.arange(3), a]), -30.0), rtol=0, atol=1e-12)
        if t == 9:  # the episode ended: a new one, the learner still pi_test's seat, the others drawn afresh
            assert int(env.state.t) == 0
            assert all(row[0] == TARGET for row in env.cast.specs)
            assert [row[1:] for row in env.cast.specs] != firsts


def _held_out(world: WorldConfig, seed: int):
    env = ImitationWorlds(world, TARGET, "crowd", 4, np.random.default_rng(seed))
    obs, rng, out_obs, out_truth = env.reset(), np.random.default_rng(seed + 1), [], []
    for _ in range(world.max_cycles):
        out_obs.append(obs)
        obs, _, pi = env.step(rng.integers(5, size=4))
        out_truth.append(pi)
    return np.concatenate(out_obs), np.concatenate(out_truth)


@pytest.mark.parametrize("learner", ["flat", "relational"])
def test_each_learner_improves_on_its_untrained_cross_entropy(learner):
    world = WorldConfig(n_agents=6, max_cycles=21)
    eval_obs, eval_truth = _held_out(world, 100)
    ticks = []
    r = train_run(learner, world, TARGET, "crowd", eval_obs, eval_truth, np.random.SeedSequence(5), GATE_STEPS,
                  batch=1024, worlds=16, tolerance=0.0, on_iteration=ticks.append)
    curve = r["curve"]
    assert [c["env_steps"] for c in curve] == [1024 * i for i in eval_iterations(6)]
    assert sum(ticks) == 6 and r["env_steps"] == GATE_STEPS and not r["converged"]
    untrained, final = curve[0]["ce"].mean(), curve[-1]["ce"].mean()
    assert final <= untrained - GATE_NATS, (learner, untrained, final)
    assert np.all(curve[-1]["kl"] >= -1e-9)  # no CE below pi_test's entropy


def test_a_run_is_a_function_of_its_seed_and_stops_once_within_tolerance():
    world = WorldConfig(n_agents=4, width=8, height=6, max_cycles=11)
    eval_obs, eval_truth = _held_out(world, 7)
    runs = [train_run("relational", world, TARGET, "crowd", eval_obs, eval_truth, np.random.SeedSequence(s), 1024,
                      batch=256, worlds=8) for s in (1, 1, 2)]
    ce = [np.concatenate([c["ce"] for c in r["curve"]]) for r in runs]
    assert ce[0].tobytes() == ce[1].tobytes() and ce[0].tobytes() != ce[2].tobytes()
    ticks = []
    loose = train_run("relational", world, TARGET, "crowd", eval_obs, eval_truth, np.random.SeedSequence(1), 10_240,
                      batch=256, worlds=8, tolerance=10.0, on_iteration=ticks.append)
    assert loose["converged"] and loose["env_steps"] == 0 and len(loose["curve"]) == 1
    assert sum(ticks) == 40  # the iterations it did not need, at once


def test_eval_iterations_are_log_spaced_from_zero_to_the_last():
    its = eval_iterations(977)
    assert its[0] == 0 and its[1] == 1 and its[-1] == 977 and its == sorted(set(its))
    late = np.array([i for i in its if i >= 10])
    assert np.diff(np.log(late)).max() < 0.5  # at least about 5 per decade where integers allow
    assert eval_iterations(0) == [0] and eval_iterations(1) == [0, 1]


def test_steps_to_reach_interpolates_in_log_steps_and_censors_at_the_budget():
    steps, kl = [0, 100, 1000, 10000], [1.0, 0.8, 0.4, 0.2]
    x, ok = steps_to_reach(steps, kl, 0.6)  # halfway between 100 and 1000 in log: sqrt(100 * 1000)
    assert ok and x == pytest.approx(math.sqrt(100 * 1000))
    x, ok = steps_to_reach(steps, kl, 0.9)  # from the untrained point: linear in steps
    assert ok and x == pytest.approx(50.0)
    assert steps_to_reach(steps, kl, 0.4) == (pytest.approx(1000.0), True)
    assert steps_to_reach(steps, kl, 1.5) == (0.0, True)
    assert steps_to_reach(steps, kl, 0.1) == (10000.0, False)
    with pytest.raises(ValueError):
        steps_to_reach([0, 10, 10], [1, 1, 1], 0.5)


def test_aggregate_is_a_geometric_mean_and_a_lower_bound_when_a_run_is_censored():
    a = aggregate([100, 10000], [True, True])
    assert a["mean"] == pytest.approx(1000.0) and not a["lower_bound"] and a["reached"] == 2
    assert a["ci95"][0] <= a["mean"] <= a["ci95"][1]
    b = aggregate([100, 10000], [True, False])
    assert b["lower_bound"] and b["reached"] == 1
    np.testing.assert_allclose(carried([0, 10, 30], [3.0, 2.0, 1.0], [0, 10, 30, 100]), [3.0, 2.0, 1.0, 1.0])
