"""PPO on persona rewards: the "direct optimisation" baseline, on RLlib's new API stack.

``ppo_config(env_config, seed)`` gives a ``PPOConfig`` for ``mirrorhall_v0`` (registered by
``mirrorhall.envs.rllib_env``) with one policy, ``"shared"``, for every agent, and settings that
fit a 2-CPU machine; build it with ``config.build_algo()`` inside ``ray_session()``. Each agent is
rewarded for the gems of its valued colour, so set ``env_config["valued"]`` (for example
``"red"``) to give PPO something to learn beyond "collect anything".

Choices, measured with Ray 2.60 on 2 CPU cores:

- ``.debugging(seed=seed)``: with no seed, RLlib's env check resets every EnvRunner's env with
  seed 42 and all runners produce the same episodes; with it, runner i seeds its envs with
  ``seed + i``.
- ``count_steps_by="agent_steps"``: ``train_batch_size`` counts agent steps, so a batch costs
  the same whatever the number of agents.
- ``num_env_runners=2`` with ``num_cpus_per_env_runner=0.5``: two sampling processes fit in 2 CPUs
  also when the algorithm runs under Tune (which reserves a CPU for itself); 0 runners samples
  in the driver.
- a small MLP (``hidden=(64, 64)``) with a separate value network.

``random_agent_return`` and ``sampled_agent_returns`` measure the mean return of one agent in one
episode for a uniformly random policy and for an algorithm's policy, the numbers the learning
test compares.

Ray is imported here at module level (import this module explicitly), but importing it sets
nothing: ``ppo_config`` applies the loopback settings of ``mirrorhall.raykit`` before it
configures anything (they also bring an already imported Ray in line), so a Ray that RLlib starts
on its own when the algorithm is built stays on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

from mirrorhall import streams
from mirrorhall.envs.core import N_ACTIONS
from mirrorhall.envs.rllib_env import (
    ENV_NAME,
    MirrorhallMultiAgentEnv,
    register_rllib_env,
    world_config,
)
from mirrorhall.raykit import loopback_env

SHARED = "shared"
"""The one policy (module id) every agent maps to."""


def shared_policy(agent_id, episode=None, **kwargs) -> str:
    """Policy mapping: every agent -> ``SHARED``."""
    return SHARED


def ppo_config(env_config: Mapping | None, seed: int, *, num_env_runners: int = 2,
               train_batch_size: int = 2000, minibatch_size: int = 250, num_epochs: int = 6,
               lr: float = 1e-3, gamma: float = 0.95, entropy_coeff: float = 0.0,
               hidden: Sequence[int] = (64, 64), env_name: str = ENV_NAME) -> PPOConfig:
    """A ``PPOConfig``: one shared policy for all agents of ``mirrorhall_v0``.

    ``env_config``: ParallelEnv kwargs plus ``valued`` and ``seed`` (see
    ``mirrorhall.envs.rllib_env``); checked here. ``seed`` seeds RLlib (``.debugging``): env
    runner i seeds its envs with ``seed + i``, torch and numpy in every process are seeded.
    ``train_batch_size`` and ``minibatch_size`` count agent steps.
    """
    loopback_env()  # before anything can start Ray: build_algo() starts one if none is running
    env_config = dict(env_config or {})
    world_config(env_config)  # fail here, not in a remote EnvRunner
    register_rllib_env(env_name)
    config = (
        PPOConfig()
        .environment(env_name, env_config=env_config)
        .framework("torch")
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=1,
            num_cpus_per_env_runner=0.5 if num_env_runners > 1 else 1,
        )
        .learners(num_learners=0)
        .multi_agent(policies={SHARED}, policy_mapping_fn=shared_policy,
                     count_steps_by="agent_steps")
        .training(train_batch_size_per_learner=train_batch_size, minibatch_size=minibatch_size,
                  num_epochs=num_epochs, lr=lr, gamma=gamma, entropy_coeff=entropy_coeff)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(hidden),
                                                   fcnet_activation="tanh",
                                                   vf_share_layers=False))
        .debugging(seed=seed)
    )
    return config


def mean_agent_return(episodes) -> float:
    """Mean over RLlib ``MultiAgentEpisode``s and their agents of one agent's episode return."""
    returns = [sa.get_return() for ep in episodes for sa in ep.agent_episodes.values()]
    if not returns:
        raise ValueError("no episodes: sample at least one complete episode")
    return float(np.mean(returns))


def sampled_agent_returns(algo, num_episodes: int, explore: bool = True) -> list[float]:
    """Mean agent return per remote EnvRunner, each sampling ``num_episodes`` full episodes.

    ``explore=True`` samples the policy's action distribution (how PPO acts while training);
    ``explore=False`` takes its most likely action.
    """
    def run(env_runner):
        return mean_agent_return(env_runner.sample(num_episodes=num_episodes, explore=explore))

    group = algo.env_runner_group
    out = group.foreach_env_runner(run, local_env_runner=group.num_remote_env_runners() == 0)
    return [float(x) for x in out]


def random_agent_return(env_config: Mapping | None, num_episodes: int, seed: int) -> float:
    """Mean return of one agent in one episode when every agent acts uniformly at random."""
    env = MirrorhallMultiAgentEnv({k: v for k, v in dict(env_config or {}).items() if k != "seed"})
    rng = streams.rng(streams.RANDOM_AGENT, seed)
    agents = env.possible_agents
    total = 0.0
    for episode in range(num_episodes):
        env.reset(seed=seed + episode)
        done = False
        while not done:
            actions = dict(zip(agents, rng.integers(N_ACTIONS, size=len(agents)).tolist(), strict=True))
            _, rewards, _, truncated, _ = env.step(actions)
            total += sum(rewards.values())
            done = truncated["__all__"]
    return total / (num_episodes * len(agents))
