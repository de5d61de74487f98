"""ModelPolicy: the trained multi-policy model behind the persona interface.

It drives any subset of a scene's agents (one prompt each, changeable at any step), batched over
worlds and driven agents. Acting is incremental: each agent's character is a running sum of
evidence, so a step costs one evidence pass over the agents seen and one head pass per driven
agent, whatever the history length. The model is any object with the ``MultiPolicyModel``
methods ``evidence``, ``prompt_vectors`` and ``forward`` (it is loaded by
``mirrorhall.imitation.checkpoint.load_policy``); this module only needs torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mirrorhall.agents.features import entity_features
from mirrorhall.envs.core import WorldCore, WorldState

_AGENT_REF = re.compile(r"\bagent[\s_]*(\d+)", re.IGNORECASE)


def _short(text: str, limit: int = 80) -> str:
    """``repr`` of a text for an error message, cut to about ``limit`` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit + 2 else shown[:limit] + f"... ({len(text)} characters)"


def check_prompt(text: str, n_agents: int) -> str:
    """A prompt must be non-empty text and may only name agents of the scene."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a prompt must be a non-empty text, e.g. 'behave as yourself'")
    for m in _AGENT_REF.finditer(text):
        digits = m.group(1)
        k = int(digits) if len(digits) <= 9 else None  # longer ids name no agent of any scene
        if k is None or k >= n_agents:
            shown = digits if len(digits) <= 12 else digits[:12] + "..."
            raise ValueError(f"prompt {_short(text)} names agent {shown}, which is not in the scene "
                             f"(agents 0..{n_agents - 1})")
    return text


@dataclass
class ModelState:
    """Per world and driven agent: summed evidence of every agent it has seen, and its prompt."""

    char_sum: torch.Tensor  # (B, M, N, de)
    char_count: torch.Tensor  # (B, M, N)
    tokens: torch.Tensor  # (M, L) prompt token ids
    prompt: torch.Tensor  # (M, d) encoded prompts
    texts: list[str]


class ModelPolicy:
    """The model acting for agents ``agents`` of a scene of ``core.config`` worlds."""

    def __init__(self, model, encode: Callable[[str], list[int]], core: WorldCore, agents: Sequence[int],
                 max_prompt_len: int = 24):
        n = core.config.n_agents
        self.agents = np.asarray(list(agents), dtype=np.int64)
        if self.agents.size == 0:
            raise ValueError("ModelPolicy needs at least one model-driven agent")
        bad = [int(a) for a in self.agents if not 0 <= a < n]
        if bad:
            raise ValueError(f"model-driven agent(s) {bad} are not in the scene (agents 0..{n - 1})")
        if len(set(self.agents.tolist())) != self.agents.size:
            raise ValueError("model-driven agents must be distinct")
        self.model = model
        self.encode = encode
        self.core = core
        self.max_prompt_len = max_prompt_len
        self.full_view = core.config.view_radius is None

    def _tokens(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.max_prompt_len, dtype=torch.long)
        for m, text in enumerate(texts):
            ids = self.encode(check_prompt(text, self.core.config.n_agents))[: self.max_prompt_len]
            out[m, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    @torch.no_grad()
    def initial_state(self, batch_size: int, prompts: str | Sequence[str] = "behave as yourself") -> ModelState:
        texts = [prompts] * self.agents.size if isinstance(prompts, str) else list(prompts)
        if len(texts) != self.agents.size:
            raise ValueError(f"give one prompt per model-driven agent ({self.agents.size}), got {len(texts)}")
        tokens = self._tokens(texts)
        n = self.core.config.n_agents
        de = self.model.config.d_evidence
        return ModelState(
            char_sum=torch.zeros(batch_size, self.agents.size, n, de),
            char_count=torch.zeros(batch_size, self.agents.size, n),
            tokens=tokens, prompt=self.model.prompt_vectors(tokens), texts=texts,
        )

    @torch.no_grad()
    def set_prompt(self, state: ModelState, agent: int, text: str) -> ModelState:
        """A new prompt for one driven agent, from now on; its memory of the scene is kept."""
        hits = np.flatnonzero(self.agents == agent)
        if hits.size == 0:
            raise ValueError(f"agent {agent} is not model-driven; driven agents: {self.agents.tolist()}")
        texts = list(state.texts)
        texts[int(hits[0])] = text
        tokens = self._tokens(texts)
        return ModelState(state.char_sum, state.char_count, tokens, self.model.prompt_vectors(tokens), texts)

    def features(self, world: WorldState) -> tuple[np.ndarray, np.ndarray]:
        """(feats (B, N, N, 5, F), visible (B, N, N)) of the current step."""
        return entity_features(self.core, world)

    @torch.no_grad()
    def probs(self, state: ModelState, feats: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """(B, M, 5) action distributions of the driven agents at this step."""
        b, m = state.char_count.shape[:2]
        ag = torch.from_numpy(self.agents)
        f = torch.from_numpy(feats[:, self.agents]).float()  # (B, M, N, 5, F)
        vis = torch.from_numpy(visible[:, self.agents])  # (B, M, N)
        query = f[:, torch.arange(m), ag]  # (B, M, 5, F)
        logits = self.model(
            tokens=state.tokens.repeat(b, 1), char_sum=state.char_sum.reshape(b * m, *state.char_sum.shape[2:]),
            char_count=state.char_count.reshape(b * m, -1), ego=ag.repeat(b),
            entity_mask=vis.reshape(b * m, -1), query=query.reshape(b * m, *query.shape[2:]),
            prompt=state.prompt.repeat(b, 1),
        )
        return torch.softmax(logits.double(), dim=-1).reshape(b, m, -1).numpy()

    @torch.no_grad()
    def observe(self, state: ModelState, feats: np.ndarray, visible: np.ndarray, actions: np.ndarray) -> ModelState:
        """Add the evidence of the step just taken: features of this step, actions (B, N)."""
        n = feats.shape[1]
        act = torch.from_numpy(np.asarray(actions, dtype=np.int64))  # (B, N)
        vis = torch.from_numpy(visible[:, self.agents]).float()  # (B, M, N)
        if self.full_view:
            own = torch.from_numpy(feats[:, np.arange(n), np.arange(n)]).float()  # (B, N, 5, F)
            ev = self.model.evidence(own, act)[:, None]  # (B, 1, N, de)
        else:
            f = torch.from_numpy(feats[:, self.agents]).float()  # (B, M, N, 5, F)
            ev = self.model.evidence(f, act[:, None].expand(-1, self.agents.size, -1))
        return ModelState(state.char_sum + ev * vis[..., None], state.char_count + vis,
                          state.tokens, state.prompt, state.texts)
