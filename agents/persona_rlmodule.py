"""Scripted personas as RLlib modules: exact persona probabilities behind the RLModule API.

``PersonaRLModule`` is an inference-only ``TorchRLModule``: its ``_forward_inference`` and
``_forward_exploration`` return ``ACTION_DIST_INPUTS = log pi(a|s)``, the log of the persona's
exact action probabilities (``Cast.probs``) in the situation its observation describes, so RLlib
EnvRunners can roll personas out next to learned policies. It has no parameters and refuses to
train: ``_forward_train`` raises (put its module id outside ``policies_to_train``).

RLlib's convention decides how an action is drawn from these logits: ``explore=True`` samples
the persona's exact distribution (how the scripted persona behaves); ``explore=False`` takes its
most likely action (RLlib's deterministic ``argmax``; ties go to the lowest action index).

Model config (``RLModuleSpec(module_class=PersonaRLModule, model_config={...})``):

``world``
    The world the observations come from: ``WorldConfig`` fields, or the env's whole
    ``env_config`` (``valued``/``seed``/``render_mode`` are ignored here).
``personas``
    Persona spec JSON (``PersonaSpec.to_json()`` objects, as text or already parsed): one object
    for every agent, or a list of ``n_agents`` objects, agent i acting as item i. The module reads
    the ego's id from the observation (``is_self``) to pick the persona, so one module can serve
    every agent of a scene. Trait, species and mirror personas are supported (their policies are
    functions of the current observation); imitators are refused, because their belief about
    their target is state that a stateless module does not keep.

The module reads each ego's situation from its own observation through the perception module
(``mirrorhall.envs.perception.decode`` and ``view_situations``).

Import this module explicitly: it imports torch and Ray at module level.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from mirrorhall.agents.cast import BELIEVER, IMITATOR, Cast, persona_probs
from mirrorhall.agents.personas import persona_from_json
from mirrorhall.envs.core import WorldConfig, WorldCore
from mirrorhall.envs.perception import decode, view_situations
from mirrorhall.envs.rllib_env import world_config


def _world(spec) -> WorldConfig:
    if isinstance(spec, WorldConfig):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError("model_config['world'] must be a mapping of WorldConfig fields (or an env_config)")
    return world_config(spec)


def _personas(spec, n_agents: int) -> list:
    data = json.loads(spec) if isinstance(spec, (str, bytes)) else spec
    if isinstance(data, Mapping):
        return [persona_from_json(dict(data))] * n_agents
    if isinstance(data, (list, tuple)):
        if len(data) != n_agents:
            raise ValueError(f"model_config['personas']: {len(data)} specs for {n_agents} agents; "
                             f"give one spec, or exactly one per agent")
        return [persona_from_json(dict(d)) for d in data]
    raise ValueError("model_config['personas'] must be persona spec JSON: one object, or a list "
                     "of one object per agent")


class PersonaRLModule(TorchRLModule):
    """Scripted personas with exact probabilities as an inference-only RLlib module."""

    def setup(self):
        cfg = dict(self.model_config or {})
        missing = [key for key in ("world", "personas") if key not in cfg]
        if missing:
            raise ValueError(f"PersonaRLModule: model_config needs {missing} "
                             "(world: WorldConfig fields; personas: persona spec JSON)")
        self.world = _world(cfg["world"])
        specs = _personas(cfg["personas"], self.world.n_agents)
        self.cast = Cast([specs], self.world)  # validates the specs against the world
        if np.any(self.cast.params.kind == IMITATOR):
            raise ValueError("PersonaRLModule: imitator personas keep a belief about their target "
                             "across steps, which this stateless module does not; use trait, "
                             "species or mirror personas")
        if np.any(self.cast.params.kind == BELIEVER):
            raise ValueError("PersonaRLModule: believers remember where they saw gems across steps, "
                             "which this stateless module does not; use trait, memoryless, species or "
                             "mirror personas")
        if self.cast.has_families:
            raise ValueError("PersonaRLModule: persona families (patrol, collector, territorial, contrarian, "
                             "explorer) read cells and keep a state across steps, which this stateless module "
                             "does not; use trait, memoryless, species or mirror personas")
        shape = getattr(self.observation_space, "shape", None)
        if shape is not None and tuple(shape) != (self.world.obs_dim,):
            raise ValueError(f"PersonaRLModule: the observation space has shape {shape} but the "
                             f"world in model_config gives observations of ({self.world.obs_dim},)")
        self._no_belief = np.zeros((1, len(self.cast.hypotheses)))  # unused: no imitators
        self._core = WorldCore(self.world)

    def probs(self, obs: np.ndarray) -> np.ndarray:
        """(B, obs_dim) observations -> (B, 5) exact action probabilities of the egos' personas."""
        sit = view_situations(self._core, decode(obs, self.world))
        params = self.cast.params.take((np.zeros_like(sit.ego), sit.ego))  # (B,)
        belief = np.broadcast_to(self._no_belief, (sit.ego.shape[0], self._no_belief.shape[1]))
        return persona_probs(params, sit, belief, self.cast.hypotheses)

    def _logits(self, batch) -> dict:
        obs = batch[Columns.OBS]
        obs_np = obs.detach().cpu().numpy() if isinstance(obs, torch.Tensor) else np.asarray(obs)
        lead = obs_np.shape[:-1]
        with np.errstate(divide="ignore"):  # an action of probability 0 gets logit -inf
            logp = np.log(self.probs(obs_np.reshape(-1, obs_np.shape[-1])))  # (B, 5)
        logits = torch.from_numpy(logp.reshape(*lead, -1))  # float64: exactly log Cast.probs
        return {Columns.ACTION_DIST_INPUTS: logits}

    def _forward_inference(self, batch, **kwargs):
        return self._logits(batch)

    def _forward_exploration(self, batch, **kwargs):
        return self._logits(batch)

    def _forward_train(self, batch, **kwargs):
        raise NotImplementedError(
            "PersonaRLModule is a scripted persona with exact probabilities and does not train; "
            "leave its module id out of config.multi_agent(policies_to_train=...)"
        )
