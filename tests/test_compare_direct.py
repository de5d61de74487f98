"""``mirrorhall compare-direct``: the RLlib PPO imitation env, its entropy term, and a tiny end-to-end run
of the command (its vectorised learners: tests/test_compare_direct_ppo.py)."""

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


@pytest.mark.slow
@pytest.mark.skipif(not (REFERENCE / "checkpoint.json").exists(), reason="reference checkpoint not built")
def test_compare_direct_cli_writes_curves_ratios_plot_and_table_and_resumes(tmp_path):
    """1 persona, both vectorised learners, 3 PPO iterations of 512 env steps, 2 scenes: the whole
    pipeline, small and without Ray; then --resume reads the finished runs back."""
    out = tmp_path / "cd"
    argv = [MIRRORHALL, "compare-direct", "--checkpoint", str(REFERENCE), "--out", str(out), "--personas", "1",
            "--iterations", "3", "--batch", "512", "--worlds", "8", "--episodes", "2", "--threads", "1",
            "--tolerance", "0", "--no-progress"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "compare-direct: model CE at K=40" in r.stdout and "relational PPO CE after 1536 env steps" in r.stdout
    result = json.loads((out / "compare_direct.json").read_text())
    assert (out / "compare_direct.png").stat().st_size > 1000
    table = (out / "compare_direct.md").read_text()
    assert "## The essay's table, measured" in table and "generalise, then infer: model KL" in table
    assert result["probe"] == "compare_direct" and result["learners"] == ["flat", "relational"]
    assert result["budget"] == 1536 and len(result["runs"]) == 2
    for run in result["runs"]:
        assert [c["env_steps"] for c in run["curve"]] == [0, 512, 1024, 1536]
        assert run["curve"][0]["ce"]["n"] == 2 * 41  # agent 0 at every step 0..40 of the 2 held-out scenes
        for c in run["curve"]:
            assert c["ce"]["ci95"][0] <= c["ce"]["mean"] <= c["ce"]["ci95"][1]
            assert c["kl"]["mean"] >= -1e-9  # no CE below pi_test's entropy
        assert (out / "runs" / f"{run['learner']}-p0-s0.safetensors").is_file()
    model = [m for m in result["model"] if m["persona"] == "mean"]
    assert [m["K"] for m in model] == result["ks"] and model[0]["ce"]["n"] == 2
    assert {(x["learner"], x["K"]) for x in result["ratios"]} == {(a, k) for a in ("flat", "relational")
                                                                  for k in (5, 10, 20, 40)}
    for x in result["ratios"]:
        assert x["steps"]["n"] == 1 and 0 <= x["steps"]["mean"] <= 1536 * (1 + 1e-9)
    again = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("read back from") == 2 and "env steps/s" not in again.stdout
    second = json.loads((out / "compare_direct.json").read_text())
    assert second["runs"] == result["runs"]
    bad = subprocess.run([MIRRORHALL, "compare-direct", "--checkpoint", str(REFERENCE), "--out", str(out),
                          "--population", "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown population" in bad.stderr
    bad = subprocess.run([MIRRORHALL, "compare-direct", "--checkpoint", str(REFERENCE), "--out", str(out),
                          "--learner", "flat", "--learner", "flat"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--learner" in bad.stderr
