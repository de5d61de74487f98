"""Bad input raises ValueError naming the offending field (and leaves no half-done state)."""

from __future__ import annotations

import numpy as np
import pytest

from mirrorhall.agents.bayes import HypothesisSet
from mirrorhall.agents.cast import Cast
from mirrorhall.agents.personas import Imitator, Mirror, Species, Trait, persona_from_json
from mirrorhall.agents.populations import get_population
from mirrorhall.envs import make, mirrorhall_v0
from mirrorhall.envs.core import WorldConfig

# --- world configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_agents": 0}, r"n_agents must be in 1\.\.256, got 0"),
        ({"n_agents": -3}, "n_agents"),
        ({"n_agents": 300}, "n_agents"),
        ({"n_agents": True}, "n_agents must be an integer"),
        ({"n_agents": 2.0}, "n_agents must be an integer"),
        ({"width": "11"}, "width must be an integer"),
        ({"width": 2}, "width"),
        ({"height": 65}, "height"),
        ({"n_colors": 0}, "n_colors"),
        ({"n_colors": 9}, "n_colors"),
        ({"gems_per_color": 0}, "gems_per_color"),
        ({"max_cycles": 0}, "max_cycles"),
        ({"view_radius": 0}, "view_radius"),
        ({"view_radius": 1.5}, "view_radius"),
        ({"interior_walls": ((0, 3),)}, "interior_walls"),
        ({"interior_walls": ((5, 10),)}, "interior_walls"),
        ({"n_agents": 80}, "grid too small.*n_agents"),  # 81 free cells, 80 + 8 gems needed
        ({"width": 4, "height": 4, "n_agents": 1}, "grid too small"),  # 4 free cells, 9 needed
        ({"n_agents": 64, "width": 11, "height": 11, "n_colors": 8, "gems_per_color": 3}, "grid too small"),
    ],
)
def test_world_config_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WorldConfig(**kwargs)
    with pytest.raises(ValueError, match=match):
        mirrorhall_v0.parallel_env(**kwargs)


def test_grid_exactly_full_is_accepted():
    cfg = WorldConfig(n_agents=73, n_colors=4, gems_per_color=2)  # 81 free cells = 73 + 8
    assert cfg.n_agents + cfg.n_gems == int((~cfg.walls()).sum())


def test_unknown_environment_and_render_mode():
    with pytest.raises(ValueError, match="unknown environment 'mirrorhall_v9'"):
        make("mirrorhall_v9")
    with pytest.raises(ValueError, match="render_mode must be one of"):
        mirrorhall_v0.parallel_env(render_mode="3d")
    with pytest.raises(ValueError, match="render_mode"):
        mirrorhall_v0.env(render_mode="rgb")


# --- reset options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"valued": {"agent_0": "mauve"}}, r"valued.*unknown colour 'mauve'"),
        ({"valued": {"agent_0": "pink"}}, r"valued.*'pink'"),  # a colour this 4-colour world lacks
        ({"valued": {"agent_0": 2}}, "valued"),
        ({"valued": {"agent_99": "red"}}, "unknown agent 'agent_99'"),
        ({"valued": ["agent_0", "red"]}, r"options\['valued'\] must map agent names"),
    ],
)
def test_reset_rejects_bad_valued_options(options, match):
    env = mirrorhall_v0.parallel_env()
    with pytest.raises(ValueError, match=match):
        env.reset(seed=0, options=options)


# --- actions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [5, -1, 1.5, "x", None, True, np.int64(7), np.float64(1.0), [1]])
def test_step_rejects_actions_outside_the_space(bad):
    env = mirrorhall_v0.parallel_env(n_agents=4)
    env.reset(seed=0)
    before = env.world_state.copy()
    actions = {"agent_0": 1, "agent_1": 2, "agent_2": bad, "agent_3": 3}
    with pytest.raises(ValueError, match=r"action for agent_2 must be an integer in 0\.\.4"):
        env.step(actions)
    # nothing moved: the step was rejected before the world advanced
    assert env.world_state.t == before.t == 0
    np.testing.assert_array_equal(env.world_state.agent_pos, before.agent_pos)
    np.testing.assert_array_equal(env.world_state.last_action, before.last_action)


def test_step_accepts_numpy_integers_and_every_action():
    env = mirrorhall_v0.parallel_env(n_agents=5)
    env.reset(seed=0)
    env.step({f"agent_{i}": np.int64(i) for i in range(5)})
    assert env.world_state.last_action[0].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("agent", ["agent_99", "agent_4", "player_0", 0])
def test_step_rejects_unknown_agents(agent):
    env = mirrorhall_v0.parallel_env(n_agents=4)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="unknown agent"):
        env.step({agent: 1})
    assert env.world_state.t == 0


def test_step_and_state_before_reset():
    env = mirrorhall_v0.parallel_env(n_agents=2)
    with pytest.raises(ValueError, match=r"reset\(\)"):
        env.step({"agent_0": 0})
    with pytest.raises(ValueError, match=r"reset\(\)"):
        env.state()


# --- persona specs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"style": "sleepy"}, "style must be one of focused, casual, erratic; got 'sleepy'"),
        ({"likes": "mauve"}, "likes must be one of .*none; got 'mauve'"),
        ({"likes": None}, "likes"),
        ({"social": "hug"}, "social must be one of"),
        ({"social": "follow"}, "follow: give an agent id"),
        ({"follow": 2}, "follow: give an agent id"),
        ({"social": "follow", "follow": -1}, "follow must be a non-negative agent id"),
        ({"social": "follow", "follow": "3"}, "follow must be a non-negative agent id"),
    ],
)
def test_trait_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Trait(**kwargs)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: Species((0.5, 0.5), 1.0), "probs"),
        (lambda: Species((0.5, 0.6, 0, 0, 0), 1.0), "probs"),
        (lambda: Species((1.5, -0.5, 0, 0, 0), 1.0), "probs"),
        (lambda: Species((0.2,) * 5, 0.0), "alpha"),
        (lambda: Imitator(-1, 0.5), "target"),
        (lambda: Imitator("2", 0.5), "target"),
        (lambda: Imitator(1, 1.5), "fidelity"),
        (lambda: Imitator(1, 0.5, own=Mirror(0)), "own"),
        (lambda: Mirror(-2), "target"),
        (lambda: Mirror(1, noise=-0.1), "noise"),
    ],
)
def test_other_specs_reject(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"kind": "wizard"}, "persona kind must be one of trait, species, imitator, mirror, believer, memoryless, patrol, collector, "
                           "territorial, contrarian, explorer; got 'wizard'"),
        ({"likes": "red"}, "'kind' field"),
        (["trait"], "'kind' field"),
        ({"kind": "trait", "colour": "red"}, r"unknown field\(s\) \['colour'\] for a trait persona"),
        ({"kind": "mirror", "target": 1, "noise": 0.1, "fidelity": 1}, r"unknown field\(s\) \['fidelity'\]"),
        ({"kind": "trait", "style": "sleepy"}, "style"),
        ({"kind": "imitator", "fidelity": 0.5}, "target"),  # a missing required field
        ({"kind": "imitator", "target": 1, "fidelity": 0.5, "own": {"kind": "mirror", "target": 0}}, "own"),
        ({"kind": "imitator", "target": 1, "fidelity": 0.5, "own": {"kind": "trait", "mood": 1}}, "mood"),
        ({"kind": "species", "probs": [0.2] * 4, "alpha": 1.0}, "probs"),
    ],
)
def test_persona_from_json_rejects(data, match):
    with pytest.raises(ValueError, match=match):
        persona_from_json(data)


# --- populations and casts -------------------------------------------------------------------------


def test_unknown_population_and_split():
    with pytest.raises(ValueError, match="unknown population 'mob'; allowed: traits, crowd"):
        get_population("mob")
    with pytest.raises(ValueError, match="split must be one of"):
        get_population("crowd").combos(4, "test")
    with pytest.raises(ValueError, match="split"):
        get_population("crowd").sample_scene(4, 4, np.random.default_rng(0), split="validation")


CFG = WorldConfig(n_agents=4)


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ([Trait(), Trait(), Trait(), Imitator(4, 0.5)], r"agent_3 targets agent 4, which does not exist \(agents 0\.\.3\)"),
        ([Mirror(9), Trait(), Trait(), Trait()], "agent_0 targets agent 9, which does not exist"),
        ([Trait(), Imitator(1, 0.5), Trait(), Trait()], "agent_1 cannot imitate itself"),
        ([Trait(), Trait(), Mirror(2), Trait()], "agent_2 cannot mirror itself"),
        ([Trait(), Trait(), Trait()], "n_agents=4"),
        ([Trait("pink"), Trait(), Trait(), Trait()], "likes: unknown colour 'pink'"),
        ([Trait(), Imitator(0, 0.5, Trait("cyan")), Trait(), Trait()], "likes: unknown colour 'cyan'"),
        ([Trait("red", "follow", "casual", follow=4), Trait(), Trait(), Trait()], "follow: agent 4 does not exist"),
        ([Trait(), Trait(), Trait(), "trait"], "unknown persona spec"),
    ],
)
def test_cast_rejects(row, match):
    with pytest.raises(ValueError, match=match):
        Cast([row], CFG)


def test_cast_rejects_empty_and_mismatched_hypotheses():
    with pytest.raises(ValueError, match="n_agents"):
        Cast([], CFG)
    with pytest.raises(ValueError, match="hypotheses"):
        Cast([[Trait()] * 4], CFG, HypothesisSet.grid(4, 5))


def test_hypothesis_set_rejects():
    with pytest.raises(ValueError, match="at least one"):
        HypothesisSet([], 4, 2)
    with pytest.raises(ValueError, match="prior"):
        HypothesisSet([Trait(), Trait("red")], 4, 2, prior=[0.7, 0.7])
    with pytest.raises(ValueError, match="prior"):
        HypothesisSet([Trait(), Trait("red")], 4, 2, prior=[1.0])
    with pytest.raises(ValueError, match="likes"):
        HypothesisSet([Trait("pink")], 4, 2)
