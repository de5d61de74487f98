"""The trained model as an RLlib module (``mirrorhall.imitation.model_rlmodule.ModelRLModule``).

Equivalence: a scene is driven step by step through the RLlib env; at every step the module
(fed only each agent's flat observation and its own RLlib state) and ``ModelPolicy`` (fed the
world state) give the same action distributions for every agent to 1e-5. Checkpoints: a
randomly initialised "small" model saved by the test (always), and the reference checkpoint
when it exists. Rollouts: a local ``MultiAgentEnvRunner`` (no Ray) with explore False and True;
a remote one on a loopback Ray instance (marked ``ray``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.rllib")
torch = pytest.importorskip("torch")

from mirrorhall.agents.cast import sample_actions  # noqa: E402
from mirrorhall.envs.core import WorldCore  # noqa: E402
from mirrorhall.envs.rllib_env import MirrorhallMultiAgentEnv, register_rllib_env, world_config  # noqa: E402
from mirrorhall.imitation.checkpoint import load_policy, save_checkpoint  # noqa: E402
from mirrorhall.imitation.model import ModelConfig, MultiPolicyModel  # noqa: E402
from mirrorhall.imitation.model_rlmodule import ModelRLModule, prompt_texts  # noqa: E402
from mirrorhall.imitation.tokenizer import Tokenizer  # noqa: E402
from mirrorhall.imitation.train import MODEL_SIZES  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / "checkpoints" / "reference"
PROMPTS = {0: "behave as yourself", "agent_1": "behave as agent 2",
           "3": "pretend to be agent 1 pretending to be you", "agent_4": "behave as agent 0"}


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised "small" model (seed 0) saved as a checkpoint."""
    torch.manual_seed(0)
    tok = Tokenizer.default()
    model = MultiPolicyModel(ModelConfig.for_tokenizer(tok, **MODEL_SIZES["small"]))
    folder = tmp_path_factory.mktemp("ckpt") / "random"
    save_checkpoint(folder, model, tok, run_config={"note": "random init, test only"}, step=0)
    return folder


@pytest.fixture(scope="module")
def columns_checkpoint(tmp_path_factory) -> Path:
    """A random "small" model (seed 0) that reads every column set with history (perspective,
    pickups) and the place columns of the test's 7 x 9 world, with recency-weighted memory."""
    torch.manual_seed(0)
    tok = Tokenizer.default()
    model = MultiPolicyModel(ModelConfig.for_tokenizer(tok, recency=(1.5, 6.0), place=(7, 9), perspective=True,
                                                       pickups=True, **MODEL_SIZES["small"]))
    folder = tmp_path_factory.mktemp("ckpt") / "columns"
    save_checkpoint(folder, model, tok, run_config={"note": "random init, test only"}, step=0)
    return folder


@pytest.fixture(params=["random", "columns", "reference"])
def checkpoint(request, random_checkpoint, columns_checkpoint) -> Path:
    if request.param == "columns":
        return columns_checkpoint
    if request.param == "reference":
        if not (REFERENCE / "checkpoint.json").exists():
            pytest.skip("reference checkpoint not built")
        return REFERENCE
    return random_checkpoint


def model_module(env_config: dict, checkpoint, prompts=PROMPTS, inference_only=True) -> ModelRLModule:
    env = MirrorhallMultiAgentEnv(env_config)
    return ModelRLModule(observation_space=env.observation_spaces["agent_0"],
                         action_space=env.action_spaces["agent_0"], inference_only=inference_only,
                         model_config={"checkpoint": str(checkpoint), "world": env_config, "prompts": prompts})


@pytest.mark.parametrize("view_radius", [None, 2])
def test_module_gives_model_policy_distributions_step_by_step(checkpoint, view_radius):
    """Same scene, same history: module probabilities == ModelPolicy probabilities (1e-5).

    Actions are sampled from ModelPolicy's distributions. Under partial observability the
    reference is ModelPolicy fed the evidence the module can see: agent j's step t-1 counts for
    observer i when j is visible to i at t-1 and at t (its action is then in i's observation).
    """
    cfg = {"n_agents": 5, "width": 9, "height": 7, "view_radius": view_radius, "max_cycles": 30}
    world = world_config(cfg)
    n = world.n_agents
    env = MirrorhallMultiAgentEnv(cfg)
    module = model_module(cfg, checkpoint)
    assert module.texts == ["behave as yourself", "behave as agent 2", "behave as yourself",
                            "pretend to be agent 1 pretending to be you", "behave as agent 0"]
    policy = load_policy(checkpoint, WorldCore(world), list(range(n)))
    mstate = policy.initial_state(1, module.texts)
    state = {k: v.expand(n, *v.shape).clone() for k, v in module.get_initial_state().items()}
    obs, _ = env.reset(seed=7)
    rng = np.random.default_rng(7)
    worst, spread = 0.0, 0.0
    for t in range(world.max_cycles):
        flat = torch.from_numpy(np.stack([obs[a] for a in env.possible_agents]))[:, None]  # (N, T=1, D)
        out = module.forward_inference({"obs": flat, "state_in": state})
        logits = out["action_dist_inputs"]
        assert logits.shape == (n, 1, 5) and logits.dtype == torch.float64
        got = logits[:, 0].exp().numpy()
        state = out["state_out"]
        if view_radius is None:  # every agent has seen every other agent's t steps
            np.testing.assert_array_equal(state["char_count"].numpy(), np.full((n, n), float(t)))
        mstate = policy.look(mstate, env.world_state)
        feats, vis = policy.features(env.world_state, mstate)
        want = policy.probs(mstate, feats, vis)[0]  # (N, 5)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=f"step {t}")
        worst = max(worst, float(np.abs(got - want).max()))
        spread = max(spread, float(np.abs(want - 0.2).max()))
        actions = sample_actions(want[None], rng)  # (1, N)
        obs, *_ = env.step({a: int(x) for a, x in zip(env.possible_agents, actions[0], strict=True)})
        _, vis_next = policy.features(env.world_state)
        mstate = policy.observe(mstate, feats, vis & vis_next, actions)
    assert spread > 0.02, "the distributions are all uniform: the comparison would be vacuous"
    print(f"\n{Path(checkpoint).name}, view_radius={view_radius}: max |module - ModelPolicy| = {worst:.2e} "
          f"over {world.max_cycles} steps x {n} agents")


def test_module_refuses_to_train_and_checks_its_config(random_checkpoint):
    cfg = {"n_agents": 5, "width": 8, "height": 6}
    module = model_module(cfg, random_checkpoint, inference_only=False)
    obs = torch.zeros(2, 1, world_config(cfg).obs_dim)
    with pytest.raises(NotImplementedError, match="inference only"):
        module.forward_train({"obs": obs})
    assert all(not p.requires_grad for p in module.parameters())
    assert module.is_stateful()
    # a stateless call (no STATE_IN) is a first step; (B, D) observations are accepted too
    env = MirrorhallMultiAgentEnv(cfg)
    o, _ = env.reset(seed=0)
    flat = torch.from_numpy(np.stack(list(o.values())))
    a = module.forward_inference({"obs": flat})["action_dist_inputs"]
    b = module.forward_exploration({"obs": flat[:, None]})["action_dist_inputs"][:, 0]
    assert a.shape == (5, 5)
    torch.testing.assert_close(a, b)

    assert prompt_texts({"agent_2": "behave as agent 1"}, 3) == ["behave as yourself", "behave as yourself",
                                                                  "behave as agent 1"]
    for prompts, match in [({"agent_7": "behave as yourself"}, "not in the scene"),
                           ({"bob": "behave as yourself"}, "neither"),
                           ({0: "behave as agent 9"}, "names agent 9"), (3, "prompt text or a mapping")]:
        with pytest.raises(ValueError, match=match):
            model_module(cfg, random_checkpoint, prompts=prompts)
    with pytest.raises(ValueError, match="names agent 4"):
        model_module({**cfg, "n_agents": 4}, random_checkpoint, prompts={0: "behave as agent 4"})
    with pytest.raises(ValueError, match="model_config needs"):
        ModelRLModule(observation_space=module.observation_space, action_space=module.action_space,
                      model_config={"world": cfg})
    with pytest.raises(ValueError, match="colours"):
        model_module({**cfg, "n_colors": 3}, random_checkpoint)
    with pytest.raises(ValueError, match="T = 1"):
        module.forward_inference({"obs": torch.zeros(2, 3, world_config(cfg).obs_dim)})


def model_rollout_config(env_config: dict, checkpoint, seed: int, prompts=PROMPTS):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    spec = RLModuleSpec(module_class=ModelRLModule,
                        model_config={"checkpoint": str(checkpoint), "world": env_config, "prompts": prompts})
    return (
        PPOConfig()
        .environment(register_rllib_env(), env_config=env_config)
        .multi_agent(policies={"model"}, policy_mapping_fn=lambda aid, ep, **kw: "model", policies_to_train=[])
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={"model": spec}))
        .env_runners(num_env_runners=0)
        .debugging(seed=seed)
    )


def check_model_episodes(episodes, env_config: dict, checkpoint, n_episodes: int, explore: bool) -> None:
    """Complete episodes; replaying each one's observations through a fresh module gives the
    logits the runner stored, and (explore=False) the actions are their argmax."""
    world = world_config(env_config)
    n = world.n_agents
    module = model_module(env_config, checkpoint)
    assert len(episodes) >= n_episodes
    for ep in episodes:
        assert ep.is_done and ep.env_steps() == world.max_cycles
        agents = [f"agent_{i}" for i in range(n)]
        assert sorted(ep.agent_episodes) == agents
        obs = np.stack([np.asarray(ep.agent_episodes[a].get_observations())[:-1] for a in agents], 1)  # (T, N, D)
        stored = np.stack([np.asarray(ep.agent_episodes[a].get_extra_model_outputs("action_dist_inputs"))
                           for a in agents], 1)  # (T, N, 5)
        actions = np.stack([np.asarray(ep.agent_episodes[a].get_actions()) for a in agents], 1)  # (T, N)
        counts = np.stack([np.asarray(ep.agent_episodes[a].get_extra_model_outputs("state_out")["char_count"])
                           for a in agents], 1)  # (T, N, N)
        state = None
        for t in range(world.max_cycles):
            logp, state = module.step(obs[t], state)
            np.testing.assert_allclose(stored[t], logp.numpy(), atol=1e-6, rtol=0)
            np.testing.assert_array_equal(counts[t], np.full((n, n), float(t)))  # state carried step to step
        assert np.isin(actions, range(5)).all()
        if not explore:
            np.testing.assert_array_equal(actions, stored.argmax(-1))


@pytest.mark.parametrize("explore", [False, True])
def test_model_module_rolls_out_in_a_multi_agent_env_runner(random_checkpoint, explore):
    from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner

    env_config = {"n_agents": 5, "width": 8, "height": 6, "max_cycles": 10}
    runner = MultiAgentEnvRunner(config=model_rollout_config(env_config, random_checkpoint, seed=3))
    try:
        episodes = runner.sample(num_episodes=3, explore=explore)
    finally:
        runner.stop()
    check_model_episodes(episodes, env_config, random_checkpoint, 3, explore)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    from mirrorhall.raykit import ray_session

    with ray_session(num_cpus=2, temp_dir=str(tmp_path_factory.mktemp("ray"))) as ray:
        yield ray


@pytest.mark.ray
def test_model_module_rolls_out_in_a_remote_env_runner(ray_cluster, random_checkpoint):
    """The spec (checkpoint path + world + prompts) travels to a Ray actor, which loads the
    safetensors weights in setup() and rolls the model out with explore False and True."""
    from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner

    env_config = {"n_agents": 5, "width": 7, "height": 7, "max_cycles": 8}
    remote_runner = ray_cluster.remote(num_cpus=1)(MultiAgentEnvRunner)
    runner = remote_runner.remote(config=model_rollout_config(env_config, random_checkpoint, seed=4))
    try:
        greedy = ray_cluster.get(runner.sample.remote(num_episodes=2, explore=False), timeout=180)
        sampled = ray_cluster.get(runner.sample.remote(num_episodes=2, explore=True), timeout=180)
    finally:
        ray_cluster.kill(runner)
    check_model_episodes(greedy, env_config, random_checkpoint, 2, explore=False)
    check_model_episodes(sampled, env_config, random_checkpoint, 2, explore=True)
