"""``mirrorhall compare-direct``: the PPO imitation env, its entropy term, and a tiny end-to-end run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.rllib")
torch = pytest.importorskip("torch")

from mirrorhall.agents.bayes import HypothesisSet  # noqa: E402
from mirrorhall.agents.cast import trait_probs  # noqa: E402
from mirrorhall.agents.personas import Trait  # noqa: E402
from mirrorhall.analysis.compare_direct.env import ImitationRewardEnv  # noqa: E402
from mirrorhall.analysis.compare_direct.learner import EntropyReward  # noqa: E402
from mirrorhall.envs.perception import situations  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / "checkpoints" / "reference"
MIRRORHALL = str(Path(sys.executable).parent / "mirrorhall")
TARGET = Trait("red", "avoid", "focused")


def test_imitation_env_pays_log_pi_test_of_the_learners_action():
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    cfg = {"n_agents": 4, "width": 8, "height": 6, "max_cycles": 15, "seed": 2,
           "target": json.dumps(TARGET.to_json()), "population": "crowd"}
    env = ImitationRewardEnv(cfg)
    check_multiagent_environments(env)
    assert env.possible_agents == ["agent_0"]
    code = HypothesisSet([TARGET], 4, 4)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=3)
    for t in range(15):
        np.testing.assert_array_equal(obs["agent_0"], env.core.observations(env.world_state)[0, 0])
        sit = situations(env.core, env.world_state).take((0, 0))
        want = trait_probs(sit, code.likes[0], code.social[0], code.beta[0])  # (5,)
        a = int(rng.integers(5))
        obs, rew, term, trunc, info = env.step({"agent_0": a})
        assert list(rew) == ["agent_0"] and set(trunc) == {"agent_0", "__all__"}
        np.testing.assert_allclose(info["agent_0"]["pi_test"], want, rtol=0, atol=1e-12)
        assert rew["agent_0"] == pytest.approx(max(np.log(want[a]), -30.0), abs=1e-12)
        assert trunc["__all__"] == (t == 14)
    # the other agents are the population's personas, drawn afresh per episode
    first = env.cast.specs[0][1:]
    env.reset()
    assert env.cast.specs[0][0] == TARGET and env.cast.specs[0][1:] != first
    with pytest.raises(ValueError, match="trait persona"):
        ImitationRewardEnv({**cfg, "target": json.dumps({"kind": "mirror", "target": 1, "noise": 0.1})})


def test_entropy_reward_subtracts_the_sampling_log_prob_on_real_steps():
    batch = {"shared": {"rewards": torch.tensor([-1.0, -2.0, 0.0]), "action_logp": torch.tensor([-1.5, -0.5, -3.0]),
                        "loss_mask": torch.tensor([True, True, False])}}
    out = EntropyReward()(rl_module=None, batch=batch, episodes=[])
    torch.testing.assert_close(out["shared"]["rewards"], torch.tensor([0.5, -1.5, 0.0]))


LOOPBACK_KEYS = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")
LOOPBACK_CHECK = """
import os
from ray._private import ray_constants
import mirrorhall.analysis.compare_direct
from mirrorhall.agents.personas import Trait
from mirrorhall.analysis.compare_direct.learner import imitation_ppo_config
from mirrorhall.analysis.compare_direct.ppo import ppo_config
from mirrorhall.envs.core import WorldConfig

keys = {keys!r}
assert not any(k in os.environ for k in keys), "importing the package changed the environment"
assert ray_constants.ENABLE_RAY_CLUSTER  # Ray's own default on Linux: bind beyond loopback
{call}
assert [os.environ[k] for k in keys] == ["0", "0"], [os.environ.get(k) for k in keys]
assert ray_constants.ENABLE_RAY_CLUSTER is False  # brought in line although Ray was imported first
print("loopback ok")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="Ray's default differs off Linux")
@pytest.mark.parametrize("call", ["ppo_config({'n_agents': 2}, seed=0)",
                                  "imitation_ppo_config(WorldConfig(n_agents=3), Trait('red', 'avoid', 'focused'), 0)"])
def test_importing_sets_nothing_and_configuring_ppo_keeps_ray_on_loopback(call):
    """Nothing runs at import; the functions that configure PPO (after which RLlib may start Ray by
    itself) apply the loopback settings first, even with Ray already imported."""
    env = {k: v for k, v in os.environ.items() if k not in LOOPBACK_KEYS}
    r = subprocess.run([sys.executable, "-c", LOOPBACK_CHECK.format(keys=LOOPBACK_KEYS, call=call)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and "loopback ok" in r.stdout, r.stderr[-3000:]


@pytest.mark.ray
@pytest.mark.skipif(not (REFERENCE / "checkpoint.json").exists(), reason="reference checkpoint not built")
def test_compare_direct_cli_writes_json_plot_and_table(tmp_path):
    """1 persona, 2 PPO iterations of 300 env steps, 2 scenes: the whole pipeline, small."""
    out = tmp_path / "cd"
    r = subprocess.run([MIRRORHALL, "compare-direct", "--checkpoint", str(REFERENCE), "--out", str(out),
                        "--personas", "1", "--iterations", "2", "--batch", "300", "--episodes", "2", "--threads", "1"],
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "compare-direct: model CE at K=40" in r.stdout
    result = json.loads((out / "compare_direct.json").read_text())
    assert (out / "compare_direct.png").stat().st_size > 1000
    table = (out / "compare_direct.md").read_text()
    assert "| PPO, reward log pi_test |" in table and "| model, K steps watched |" in table
    assert result["probe"] == "compare_direct" and len(result["personas"]) == 1
    ppo = [c for c in result["conditions"] if c["method"] == "ppo" and c["persona"] == "mean"]
    model = [c for c in result["conditions"] if c["method"] == "model" and c["persona"] == "mean"]
    assert [c["iteration"] for c in ppo] == [0, 1, 2]
    assert ppo[0]["env_steps"] == 0 and ppo[2]["env_steps"] >= 600
    assert [c["env_steps"] for c in model] == result["ks"]
    for c in ppo + model:
        ce = c["ce"]
        assert ce["ci95"][0] <= ce["mean"] <= ce["ci95"][1]
        assert ce["mean"] >= c["entropy"]["mean"] - 1e-9  # no CE below pi_test's entropy
    assert ppo[0]["ce"]["n"] == 2 * 41  # agent 0 at every step 0..40 of the 2 held-out scenes
    assert model[0]["ce"]["n"] == 2
    bad = subprocess.run([MIRRORHALL, "compare-direct", "--checkpoint", str(REFERENCE), "--out", str(out),
                          "--population", "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown population" in bad.stderr
