"""``ImitationRewardEnv``: the RLlib env of ``compare-direct``'s PPO arm, where the learners are paid
log pi_test(a|s) exactly (see the package docstring)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from ray.rllib.env.env_context import EnvContext

from mirrorhall.agents.cast import Cast, sample_actions
from mirrorhall.agents.personas import Trait, persona_from_json
from mirrorhall.agents.populations import get_population
from mirrorhall.envs.perception import situations
from mirrorhall.envs.rllib_env import MirrorhallMultiAgentEnv

EXTRA_KEYS = ("target", "population", "learners", "split")


class ImitationRewardEnv(MirrorhallMultiAgentEnv):
    """The RLlib env where the learners (agents 0..L-1) are paid log pi_test(a|s).

    env_config: the world keys and ``seed`` of ``mirrorhall.envs.rllib_env``, plus
    ``target`` (pi_test's persona spec JSON, a trait persona), ``population`` (the other agents'
    personas, drawn afresh at every reset from the env's generator; default ``crowd``),
    ``split`` (``train``) and ``learners`` (1). Only the learners appear in RLlib's dicts; the
    other agents act inside the env. Each learner's reward is ``log pi_test(a|s)`` of its action a
    in its own situation s (exact); its info carries ``pi_test`` (the 5 probabilities).
    """

    def __init__(self, config: Mapping | None = None):
        config = config if config is not None else {}
        base = {k: v for k, v in dict(config).items() if k not in EXTRA_KEYS}
        if isinstance(config, EnvContext):
            base = EnvContext(base, worker_index=config.worker_index, vector_index=config.vector_index)
        super().__init__(base)
        if "target" not in config:
            raise ValueError("ImitationRewardEnv: env_config needs 'target' (pi_test's persona spec JSON)")
        target = config["target"]
        target = persona_from_json(json.loads(target) if isinstance(target, (str, bytes)) else dict(target))
        if not isinstance(target, Trait):
            raise ValueError(f"ImitationRewardEnv: target must be a trait persona, got {target!r}")
        self.target = target
        self.population = get_population(config.get("population", "crowd"))
        self.split = config.get("split", "train")
        n = self.config.n_agents
        self.n_learners = int(config.get("learners", 1))
        if not 1 <= self.n_learners <= n:
            raise ValueError(f"learners must be in 1..{n}, got {self.n_learners}")
        self.possible_agents = [f"agent_{i}" for i in range(self.n_learners)]
        self.agents = self.possible_agents[:]
        self._agent_ids = set(self.possible_agents)
        self.observation_spaces = {a: self.observation_spaces[a] for a in self.possible_agents}
        self.action_spaces = {a: self.action_spaces[a] for a in self.possible_agents}
        self.observation_space = spaces.Dict(self.observation_spaces)
        self.action_space = spaces.Dict(self.action_spaces)
        self.cast = None
        self.cast_state = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
        self.world_state = self.core.reset(1, self._np_random, self._valued[None])
        self._done = False
        n, c = self.config.n_agents, self.config.n_colors
        others = self.population.sample_scene(n, c, self._np_random, split=self.split)
        row = [self.target] * self.n_learners + list(others[self.n_learners:])
        self.cast = Cast([row], self.config)
        self.cast_state = self.cast.initial_state()
        self.agents = self.possible_agents[:]
        obs = self.core.observations(self.world_state)[0]
        return {a: obs[i] for i, a in enumerate(self.agents)}, {a: {} for a in self.agents}

    def step(self, action_dict: dict):
        if self._done:
            raise ValueError("step() called before reset() or after the episode ended; call reset()")
        self.cast_state = self.cast.perceive(self.cast_state, self.core, self.world_state)  # believers look
        sit = situations(self.core, self.world_state)
        probs = self.cast.probs(sit, self.cast_state)  # (1, N, 5): the learners' rows are pi_test
        act = sample_actions(probs, self._np_random)[0]  # the scripted agents' actions
        for i, agent in enumerate(self.agents):
            if agent not in action_dict:
                raise ValueError(f"no action for learner {agent}")
            act[i] = int(action_dict[agent])
        if act.min() < 0 or act.max() > 4:
            raise ValueError(f"actions must be integers in 0..4; got {action_dict!r}")
        self.core.step(self.world_state, act[None], self._np_random)
        self.cast_state = self.cast.observe(self.cast_state, sit, act[None])
        done = self.world_state.t >= self.config.max_cycles
        self._done = done
        obs = self.core.observations(self.world_state)[0]
        with np.errstate(divide="ignore"):
            logp = np.log(probs[0, np.arange(self.n_learners), act[: self.n_learners]])
        agents = self.agents
        rewards = {a: float(max(logp[i], -30.0)) for i, a in enumerate(agents)}
        terminateds = dict.fromkeys([*agents, "__all__"], False)
        truncateds = dict.fromkeys([*agents, "__all__"], done)
        infos = {a: {"pi_test": probs[0, i].tolist()} for i, a in enumerate(agents)}
        return {a: obs[i] for i, a in enumerate(agents)}, rewards, terminateds, truncateds, infos
