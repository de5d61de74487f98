"""The trained multi-policy model as an inference-only RLlib module: ``ModelRLModule``.

RLlib EnvRunners (``MultiAgentEnvRunner``, an Algorithm's runners, remote or local) can roll the
shared model out in the RLlib env (``mirrorhall.envs.rllib_env``), one prompt per agent, next to
scripted personas (``mirrorhall.agents.rllib_modules.PersonaRLModule``) or learned policies.

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
    Only the agent's own flat observation: agent positions, ids and last actions from the agent
    table, gems from the grid (``split_observation``); from them it rebuilds the world as the
    agent sees it and computes the features with ``mirrorhall.agents.features.entity_features``
    (the observer's row, with the observer's visibility).

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

from mirrorhall.agents.features import entity_features, n_features
from mirrorhall.agents.model_policy import check_prompt
from mirrorhall.envs.core import NO_ACTION, WorldConfig, WorldCore, WorldState, split_observation
from mirrorhall.envs.rllib_env import world_config

DEFAULT_PROMPT = "behave as yourself"
STATE_KEYS = ("char_sum", "char_count", "feats", "visible")


class ObserverCore(WorldCore):
    """A ``WorldCore`` whose visibility is given: every observer of world b sees what ``see`` says.

    Used to compute one observer's ``entity_features`` from a world rebuilt from its own
    observation (things it cannot see are placeholders, masked out here).
    """

    def __init__(self, config: WorldConfig):
        super().__init__(config)
        self.gem_seen: np.ndarray | None = None  # (B, G)
        self.agent_seen: np.ndarray | None = None  # (B, N)

    def visible(self, state: WorldState) -> tuple[np.ndarray, np.ndarray]:
        b, n = state.last_action.shape
        g = state.gem_pos.shape[1]
        return (np.broadcast_to(self.gem_seen[:, None, :], (b, n, g)),
                np.broadcast_to(self.agent_seen[:, None, :], (b, n, n)))


def observed_worlds(obs: np.ndarray, config: WorldConfig) -> tuple[WorldState, np.ndarray, np.ndarray, np.ndarray]:
    """(B, obs_dim) flat observations -> the world each ego sees.

    Returns (state, ego (B,), gem_seen (B, G), agent_seen (B, N)): ``state`` holds the visible
    agents' positions and last actions and the visible gems (each colour's visible gems in its
    first slots); unseen agents sit on the ego's cell and unseen gems on cell (0, 0), both masked
    by ``gem_seen``/``agent_seen``. Under full observability it is the true world state (gems of
    one colour possibly in another order, which no feature depends on).
    """
    obs = np.asarray(obs, dtype=np.float64)
    if obs.ndim != 2 or obs.shape[1] != config.obs_dim:
        raise ValueError(f"observations must have shape (B, {config.obs_dim}) for this world; got {obs.shape}")
    b, n = obs.shape[0], config.n_agents
    h, w, c, k = config.height, config.width, config.n_colors, config.gems_per_color
    seg = split_observation(obs, config)
    grid, table = seg["grid"], seg["agents"]  # (B, H, W, 2 + C), (B, N, 5)
    is_self = table[..., 4] == 1
    if not np.all(is_self.sum(-1) == 1):
        raise ValueError("every observation must mark exactly one agent as itself (is_self)")
    ego = is_self.argmax(-1)
    rows = np.arange(b)
    agent_seen = table[..., 0] > 0  # (B, N)
    me = table[rows, ego, 1:3].astype(np.int64)  # (B, 2)
    pos = np.where(agent_seen[..., None], table[..., 1:3], me[:, None, :]).astype(np.int64)
    last = np.where(agent_seen, table[..., 3], NO_ACTION).astype(np.int64)

    gem_mask = np.moveaxis(grid[..., 2:].reshape(b, h * w, c) > 0, -1, 1)  # (B, C, H*W)
    cell = np.argsort(~gem_mask, axis=-1, kind="stable")[..., :k]  # (B, C, K) visible gems first
    gem_seen = np.take_along_axis(gem_mask, cell, axis=-1)  # (B, C, K)
    gem_pos = np.stack(np.divmod(np.where(gem_seen, cell, 0), w), axis=-1)  # (B, C, K, 2)
    state = WorldState(
        agent_pos=pos, gem_pos=gem_pos.reshape(b, c * k, 2).astype(np.int64),
        gem_color=np.repeat(np.arange(c), k), last_action=last,
        valued=np.full((b, n), -1, np.int64), collected=np.zeros((b, n, c), np.int64), t=0,
    )
    return state, ego.astype(np.int64), gem_seen.reshape(b, c * k), agent_seen


def observer_features(obs: np.ndarray, config: WorldConfig, core: ObserverCore | None = None):
    """(B, obs_dim) -> (feats (B, N, 5, F) float32, visible (B, N) bool, ego (B,), last (B, N)).

    ``feats[b, j]`` are ego b's features of entity j, equal to ``entity_features(core, world)``
    at [ego, j] of the true world; ``last`` the last actions the ego sees (NO_ACTION if unseen).
    """
    state, ego, gem_seen, agent_seen = observed_worlds(obs, config)
    core = core or ObserverCore(config)
    core.gem_seen, core.agent_seen = gem_seen, agent_seen
    feats, _ = entity_features(core, state)  # (B, N, N, 5, F), every observer sees what ego b sees
    b = ego.shape[0]
    return feats[np.arange(b), ego], agent_seen, ego, state.last_action


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
        from mirrorhall.imitation.checkpoint import CheckpointError, load_model

        cfg = dict(self.model_config or {})
        missing = [key for key in ("checkpoint", "world") if key not in cfg]
        if missing:
            raise ValueError(f"ModelRLModule: model_config needs {missing} (checkpoint: a checkpoint or "
                             "run folder; world: WorldConfig fields or the env_config)")
        world = cfg["world"]
        self.world = world if isinstance(world, WorldConfig) else world_config(world)
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg["threads"]))
        model, tokenizer, _ = load_model(cfg["checkpoint"])
        mc = model.config
        if mc.n_colors != self.world.n_colors:
            raise CheckpointError(f"the checkpoint reads worlds of {mc.n_colors} colours, the world has "
                                  f"{self.world.n_colors}")
        if self.world.n_agents > mc.max_agents:
            raise CheckpointError(f"the checkpoint reads at most {mc.max_agents} agents, the world has "
                                  f"{self.world.n_agents}")
        shape = getattr(self.observation_space, "shape", None)
        if shape is not None and tuple(shape) != (self.world.obs_dim,):
            raise ValueError(f"ModelRLModule: the observation space has shape {shape} but the world in "
                             f"model_config gives observations of ({self.world.obs_dim},)")
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        n = self.world.n_agents
        self.texts = prompt_texts(cfg.get("prompts"), n)
        tokens = torch.zeros(n, mc.max_prompt_len, dtype=torch.long)
        for i, text in enumerate(self.texts):
            ids = tokenizer.encode(text)[: mc.max_prompt_len]
            tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        self._tokens = tokens  # (N, L), plain attributes: not part of the state dict
        with torch.no_grad():
            self._prompt = model.prompt_vectors(tokens)  # (N, d)
        self._core = ObserverCore(self.world)
        self._n_features = n_features(self.world.n_colors)

    # --- RLlib's stateful-module API ------------------------------------------------------------

    def get_initial_state(self) -> dict:
        n, de, f = self.world.n_agents, self.model.config.d_evidence, self._n_features
        return {"char_sum": torch.zeros(n, de), "char_count": torch.zeros(n),
                "feats": torch.zeros(n, 5, f), "visible": torch.zeros(n)}

    @torch.no_grad()
    def step(self, obs: np.ndarray, state: Mapping | None = None) -> tuple[torch.Tensor, dict]:
        """(B, obs_dim) observations and (B, ...) states -> (log probs (B, 5) float64, next states)."""
        obs = np.asarray(obs)
        b = obs.shape[0]
        if state is None:
            state = {k: v.expand(b, *v.shape) for k, v in self.get_initial_state().items()}
        state = {k: torch.as_tensor(np.asarray(state[k]) if not torch.is_tensor(state[k]) else state[k]).float()
                 for k in STATE_KEYS}
        feats, visible, ego, last = observer_features(obs, self.world, self._core)
        feats_t = torch.from_numpy(np.ascontiguousarray(feats)).float()  # (B, N, 5, F)
        vis_t = torch.from_numpy(visible)  # (B, N)
        act = torch.from_numpy(last)  # (B, N): actions of step t-1 of the agents visible now
        seen = state["visible"] * (act >= 0).float()  # seen at t-1, and its action seen at t
        ev = self.model.evidence(state["feats"], act.clamp(min=0)) * seen[..., None]  # (B, N, de)
        char_sum = state["char_sum"] + ev
        char_count = state["char_count"] + seen
        ego_t = torch.from_numpy(ego)
        rows = torch.arange(b)
        logits = self.model(tokens=self._tokens[ego_t], char_sum=char_sum, char_count=char_count, ego=ego_t,
                            entity_mask=vis_t, query=feats_t[rows, ego_t], prompt=self._prompt[ego_t])
        logp = torch.log_softmax(logits.double(), dim=-1)
        return logp, {"char_sum": char_sum, "char_count": char_count, "feats": feats_t,
                      "visible": vis_t.float()}

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
