"""PPO paid log pi_test(a|s), entropy-regularised: ``compare-direct``'s direct-optimisation arm.

``EntropyReward`` and ``MaxEntPPOLearner`` turn the per-step objective into -KL(q || pi_test)
(see the package docstring); ``imitation_ppo_config`` configures one learner (agent 0) in
``ImitationRewardEnv``; ``train_ppo`` trains it and scores it after every iteration.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns

from mirrorhall.agents.personas import Trait
from mirrorhall.analysis.common import cross_entropy
from mirrorhall.analysis.compare_direct.env import ImitationRewardEnv
from mirrorhall.analysis.compare_direct.ppo import SHARED, ppo_config
from mirrorhall.envs.core import WorldConfig
from mirrorhall.envs.rllib_env import WORLD_KEYS


class EntropyReward(ConnectorV2):
    """Learner connector: reward r - log q_old(a|s) on every real (not bootstrap) timestep.

    ``log q_old`` is the ``action_logp`` the EnvRunner recorded when it sampled a; with
    gamma = 0 the per-step objective becomes E_q[log pi_test - log q] = -KL(q || pi_test).
    """

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, **kwargs):
        for columns in batch.values():
            if not isinstance(columns, dict) or Columns.REWARDS not in columns or Columns.ACTION_LOGP not in columns:
                continue
            r, logp = columns[Columns.REWARDS], columns[Columns.ACTION_LOGP]
            mask = columns.get(Columns.LOSS_MASK)
            if isinstance(r, torch.Tensor):
                lp = torch.as_tensor(logp, dtype=r.dtype, device=r.device)
                m = torch.ones_like(r) if mask is None else torch.as_tensor(mask, device=r.device).to(r.dtype)
                columns[Columns.REWARDS] = r - lp * m
            else:
                m = 1.0 if mask is None else np.asarray(mask, dtype=np.float32)
                columns[Columns.REWARDS] = np.asarray(r) - np.asarray(logp) * m
        return batch


class MaxEntPPOLearner(PPOTorchLearner):
    """RLlib's PPO learner with ``EntropyReward`` inserted before the advantage estimation."""

    def build(self) -> None:
        super().build()
        if self._learner_connector is not None:
            self._learner_connector.insert_before(GeneralAdvantageEstimation, EntropyReward())


def imitation_ppo_config(world: WorldConfig, target: Trait, seed: int, population: str = "crowd",
                         train_batch_size: int = 1000, num_env_runners: int = 0, **ppo_kwargs):
    """A ``PPOConfig`` for one learner (agent 0) paid log pi_test(a|s), entropy-regularised."""
    world_cfg = {k: v for k, v in asdict(world).items() if k in WORLD_KEYS}
    world_cfg["interior_walls"] = tuple(tuple(w) for w in world_cfg.get("interior_walls", ()))
    kwargs = {"gamma": 0.0, "entropy_coeff": 0.0, "minibatch_size": min(250, train_batch_size), **ppo_kwargs}
    config = ppo_config({**world_cfg, "seed": seed}, seed=seed, num_env_runners=num_env_runners,
                        train_batch_size=train_batch_size, **kwargs)
    env_config = {**world_cfg, "seed": seed, "target": json.dumps(target.to_json()), "population": population}
    return (config.environment(ImitationRewardEnv, env_config=env_config)
            .training(learner_class=MaxEntPPOLearner))


def policy_probs(module, obs: np.ndarray) -> np.ndarray:
    """(B, 5) action distributions of an RLlib PPO module for flat observations (B, D)."""
    with torch.no_grad():
        out = module.forward_inference({Columns.OBS: torch.from_numpy(np.asarray(obs, np.float32))})
        return torch.softmax(out[Columns.ACTION_DIST_INPUTS].double(), -1).numpy()


def train_ppo(world: WorldConfig, target: Trait, seed: int, iterations: int, eval_obs: np.ndarray,
              eval_truth: np.ndarray, population: str, train_batch_size: int = 1000,
              log=None, on_iteration=None) -> list[dict]:
    """PPO imitating ``target``: [{"iteration", "env_steps", "ce": per-situation CE array}] for
    iterations 0 (untrained) .. ``iterations``; ``on_iteration()`` after each trained iteration."""
    algo = imitation_ppo_config(world, target, seed, population, train_batch_size).build_algo()
    try:
        out = [{"iteration": 0, "env_steps": 0,
                "ce": cross_entropy(eval_truth, policy_probs(algo.get_module(SHARED), eval_obs))}]
        for it in range(1, iterations + 1):
            result = algo.train()
            steps = int(result["env_runners"]["num_env_steps_sampled_lifetime"])
            module = algo.learner_group._learner.module[SHARED] if algo.learner_group.is_local \
                else algo.get_module(SHARED)
            ce = cross_entropy(eval_truth, policy_probs(module, eval_obs))
            out.append({"iteration": it, "env_steps": steps, "ce": ce})
            if log:
                log(f"  PPO {target.describe()}: iteration {it}, {steps} env steps, CE {ce.mean():.3f}")
            if on_iteration:
                on_iteration()
    finally:
        algo.stop()
    return out
