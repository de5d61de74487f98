"""The trained multi-policy model as an inference-only RLlib module: ``ModelRLModule``.

RLlib EnvRunners (``MultiAgentEnvRunner``, an Algorithm's runners, remote or local) can roll the
shared model out in the RLlib env (``mirrorhall.envs.rllib_env``), one prompt per agent, next to
scripted personas (``mirrorhall.agents.persona_rlmodule.PersonaRLModule``) or learned policies.

How the model's history reaches an RLlib module
    The model needs each agent's memory of the scene: the summed evidence of every agent it has
    seen (``char_sum`` (N, de), ``char_count`` (N,)), as ``ModelPolicy`` keeps it. RLlib calls a
    module with observations, one step at a time; this module is *stateful* in RLlib's sense
    (``get_initial_state`` + ``STATE_IN``/``STATE_OUT``): the state of one agent in one episode is

    ``char_sum`` (N, de), ``char_count`` (N,)
        the evidence summed so far, exactly ``ModelPolicy``'s per-agent state;
    ``feats`` (N, 5, F), ``visible`` (N,)
        the relational features of every entity and who was visible, as this agent saw them at
        the previous step.

    At step t the observation shows every visible agent's action of step t-1 (the agent table's
    "last action" column), so the module first adds the evidence of step t-1 (features of step
    t-1, the actions it now sees) and then computes the action distribution of step t. RLlib
    resets the state to zeros at the start of every episode and keeps it per (episode, agent).

What the module reads
    Only the agent's own flat observation, through the one decoder of the perception module
    (``mirrorhall.envs.perception.decode``), and the model through its one way in
    (``mirrorhall.imitation.model_io.ObservationActor``, which this module wraps).

Exactness
    Under full observability (``view_radius=None``) the observation holds the whole state and the
    module's action distribution equals ``ModelPolicy.probs`` for the same history (tested to
    1e-5). Under partial observability it is exact too except for one thing only ``ModelPolicy``
    can know: when agent j is visible at step t-1 but out of view at step t, j's action of step t-1
    is not in any observation the ego has, so the module leaves that step out of j's evidence
    (``ModelPolicy`` and training count it, using the true action).

``explore=True`` samples the model's distribution; ``explore=False`` takes its most likely action
(RLlib's argmax). ``_forward_train`` raises: the module is inference only (leave its module id out
of ``policies_to_train``).

Model config (``RLModuleSpec(module_class=ModelRLModule, model_config={...})``):

``checkpoint``
    A checkpoint or training run folder (``mirrorhall.imitation.checkpoint``); the safetensors
    weights are loaded in ``setup()``, so the path must exist on the node the EnvRunner runs on.
``world``
    ``WorldConfig`` fields, or the env's whole ``env_config``.
``prompts``
    One prompt for every agent (text), or a mapping ``{agent: prompt}`` whose keys are agent ids
    (``"agent_3"``) or indices (``3`` or ``"3"``). Unlisted agents get ``"behave as yourself"``.
    The module reads the ego's id from the observation (``is_self``), so one module can serve
    every agent of a scene.
``threads`` (optional)
    ``torch.set_num_threads`` for the process the module lives in.

Import this module explicitly: it imports torch and Ray at module level.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from mirrorhall.envs.core import WorldConfig
from mirrorhall.envs.rllib_env import world_config
from mirrorhall.imitation.model_io import (
    DEFAULT_PROMPT,
    ActorState,
    Memory,
    ObservationActor,
    check_prompt,
)

STATE_KEYS = ("char_sum", "char_count", "feats", "visible", "looked", "gems")


def _prompt_index(key, n_agents: int) -> int:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        i = int(key)
    else:
        m = re.fullmatch(r"(?:agent_)?(\d+)", str(key).strip())
        if not m:
            raise ValueError(f"model_config['prompts']: key {key!r} is neither an agent id ('agent_3') "
                             "nor an index")
        i = int(m.group(1))
    if not 0 <= i < n_agents:
        raise ValueError(f"model_config['prompts']: agent {key!r} is not in the scene (agents 0..{n_agents - 1})")
    return i


def _state_dict(state: ActorState, row: int | None = None) -> dict:
    """RLlib's per-agent state: the actor's state as a flat dict of tensors (one row, or all)."""
    out = {"char_sum": state.memory.char_sum, "char_count": state.memory.char_count,
           "feats": state.feats, "visible": state.visible, "looked": state.looked, "gems": state.gems}
    return out if row is None else {k: v[row] for k, v in out.items()}


def prompt_texts(spec, n_agents: int) -> list[str]:
    """One prompt text per agent from a text or an {agent: text} mapping (others: the default)."""
    if spec is None:
        spec = DEFAULT_PROMPT
    if isinstance(spec, str):
        texts = [spec] * n_agents
    elif isinstance(spec, Mapping):
        texts = [DEFAULT_PROMPT] * n_agents
        for key, text in spec.items():
            texts[_prompt_index(key, n_agents)] = text
    else:
        raise ValueError("model_config['prompts'] must be a prompt text or a mapping {agent: prompt}")
    return [check_prompt(t, n_agents) for t in texts]


class ModelRLModule(TorchRLModule):
    """The shared multi-policy model, one prompt per agent, as a stateful inference-only module."""

    def setup(self):
        from mirrorhall.imitation.checkpoint import load_model

        cfg = dict(self.model_config or {})
        missing = [key for key in ("checkpoint", "world") if key not in cfg]
        if missing:
            raise ValueError(f"ModelRLModule: model_config needs {missing} (checkpoint: a checkpoint or "
                             "run folder; world: WorldConfig fields or the env_config)")
        world = cfg["world"]
        self.world = world if isinstance(world, WorldConfig) else world_config(world)
        if cfg.get("threads"):  # the module's process is the RLlib EnvRunner's: set here, its entry point
            torch.set_num_threads(int(cfg["threads"]))
        model, tokenizer, _ = load_model(cfg["checkpoint"])
        shape = getattr(self.observation_space, "shape", None)
        if shape is not None and tuple(shape) != (self.world.obs_dim,):
            raise ValueError(f"ModelRLModule: the observation space has shape {shape} but the world in "
                             f"model_config gives observations of ({self.world.obs_dim},)")
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self.texts = prompt_texts(cfg.get("prompts"), self.world.n_agents)
        self.actor = ObservationActor(model, tokenizer, self.world, self.texts)

    # --- RLlib's stateful-module API ------------------------------------------------------------

    def get_initial_state(self) -> dict:
        return _state_dict(self.actor.initial_state(1), 0)

    @torch.no_grad()
    def step(self, obs: np.ndarray, state: Mapping | None = None) -> tuple[torch.Tensor, dict]:
        """(B, obs_dim) observations and (B, ...) states -> (log probs (B, 5) float64, next states)."""
        obs = np.asarray(obs)
        if state is not None:
            t = {k: torch.as_tensor(np.asarray(state[k]) if not torch.is_tensor(state[k]) else state[k]).float()
                 for k in STATE_KEYS}
            state = ActorState(Memory(t["char_sum"], t["char_count"]), t["feats"], t["visible"], t["looked"],
                               t["gems"])
        logp, nxt, _ = self.actor.act(obs, state)
        return logp, _state_dict(nxt)

    def probs(self, obs: np.ndarray, state: Mapping | None = None) -> tuple[np.ndarray, dict]:
        """(B, 5) action distributions and the next states; see ``step``."""
        logp, nxt = self.step(obs, state)
        return logp.exp().numpy(), nxt

    def _logits(self, batch) -> dict:
        obs = batch[Columns.OBS]
        obs_np = obs.detach().cpu().numpy() if isinstance(obs, torch.Tensor) else np.asarray(obs)
        timed = obs_np.ndim == 3
        if timed and obs_np.shape[1] != 1:
            raise ValueError("ModelRLModule acts one step at a time (T = 1); it does not train on sequences")
        flat = obs_np.reshape(-1, obs_np.shape[-1])
        logp, nxt = self.step(flat, batch.get(Columns.STATE_IN))
        if timed:
            logp = logp[:, None]
        return {Columns.ACTION_DIST_INPUTS: logp, Columns.STATE_OUT: nxt}

    def _forward_inference(self, batch, **kwargs):
        return self._logits(batch)

    def _forward_exploration(self, batch, **kwargs):
        return self._logits(batch)

    def _forward_train(self, batch, **kwargs):
        raise NotImplementedError(
            "ModelRLModule is the trained multi-policy model for inference only and does not train "
            "here (train it with mirrorhall train); leave its module id out of "
            "config.multi_agent(policies_to_train=...)"
        )
