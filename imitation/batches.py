"""From stored episodes to model inputs: features, pooled evidence, tokens, soft labels.

``EpisodeArrays`` rebuilds what every agent observed from an episode's stored states (the
dataset stores states, never observations). ``BatchSampler`` picks episodes and samples
deterministically from (seed, step), so a resumed run reads exactly the batches it would have.
``mirrorhall.imitation.model_io.batch_inputs`` turns a batch into the model's inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from mirrorhall import streams
from mirrorhall.envs.core import WorldConfig, WorldCore
from mirrorhall.envs.perception import entity_features
from mirrorhall.imitation.model_io import batch_inputs, encode_prompts
from mirrorhall.imitation.shards import StoredEpisode
from mirrorhall.imitation.tokenizer import Tokenizer


@dataclass
class EpisodeArrays:
    """One episode as the model reads it."""

    episode: int  # global episode index in the dataset
    feats: np.ndarray  # (T + 1, Ni, Nj, 5, F) int8: what observer i sees of j's situation at each step
    visible: np.ndarray  # (T + 1, Ni, Nj)
    actions: np.ndarray  # (T, N)
    agent: np.ndarray  # (S,) samples
    t: np.ndarray  # (S,)
    kind: np.ndarray  # (S,)
    tokens: np.ndarray  # (S, L)
    label: np.ndarray  # (S, 5)


def episode_arrays(ep: StoredEpisode, world: WorldConfig, tokenizer: Tokenizer, max_len: int) -> EpisodeArrays:
    core = WorldCore(world)
    feats, visible = entity_features(core, ep.world_states(world))
    # features are in {-1, 0, 1}: int8 keeps a whole dataset in memory
    return EpisodeArrays(episode=ep.episode, feats=feats.astype(np.int8), visible=visible, actions=ep.actions.astype(np.int64),
                         agent=ep.agent, t=ep.t, kind=ep.kind,
                         tokens=encode_prompts(tokenizer, ep.prompt, max_len).numpy(), label=ep.label)


@dataclass
class Batch:
    """Episodes stacked (E of them) and the samples drawn from them."""

    feats: torch.Tensor  # (E, T + 1, N, N, 5, F)
    visible: torch.Tensor  # (E, T + 1, N, N) bool
    actions: torch.Tensor  # (E, T, N)
    episode: torch.Tensor  # (S,) index into E
    agent: torch.Tensor  # (S,)
    t: torch.Tensor  # (S,)
    kind: torch.Tensor  # (S,)
    tokens: torch.Tensor  # (S, L)
    label: torch.Tensor  # (S, 5)
    full_view: bool = False

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        moved = {f.name: getattr(self, f.name).to(device, non_blocking=True)
                 for f in fields(self) if f.name != "full_view"}
        return Batch(**moved, full_view=self.full_view)


def make_batch(episodes: list[EpisodeArrays], picks: list[np.ndarray], full_view: bool = False) -> Batch:
    """Stack episodes (all of one length) and the chosen sample indices of each."""
    ep_idx = np.concatenate([np.full(len(p), e) for e, p in enumerate(picks)])

    def cat(name):
        return np.concatenate([getattr(ep, name)[p] for ep, p in zip(episodes, picks, strict=True)])

    return Batch(
        feats=torch.from_numpy(np.stack([e.feats for e in episodes])).float(),
        visible=torch.from_numpy(np.stack([e.visible for e in episodes])),
        actions=torch.from_numpy(np.stack([e.actions for e in episodes])),
        episode=torch.from_numpy(ep_idx), agent=torch.from_numpy(cat("agent")),
        t=torch.from_numpy(cat("t")), kind=torch.from_numpy(cat("kind")),
        tokens=torch.from_numpy(cat("tokens")), label=torch.from_numpy(cat("label")),
        full_view=full_view,
    )


class BatchSampler:
    """Deterministic batches: batch ``step`` depends only on (seed, step) and the episode list.

    Epoch k visits the episodes in a permutation drawn from (seed, k); each batch takes
    ``episodes_per_batch`` of them and ``samples_per_episode`` samples of each.
    """

    def __init__(self, n_episodes: int, episodes_per_batch: int, samples_per_episode: int, seed: int):
        if n_episodes < 1:
            raise ValueError("the dataset has no training episodes; generate more episodes")
        self.n = n_episodes
        self.e = min(episodes_per_batch, n_episodes)
        self.k = samples_per_episode
        self.seed = seed
        self.per_epoch = max(self.n // self.e, 1)

    def episodes(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.per_epoch)
        perm = streams.rng(streams.BATCH_ORDER, self.seed, epoch).permutation(self.n)
        return perm[k * self.e: (k + 1) * self.e]

    def samples(self, step: int, sizes: list[int]) -> list[np.ndarray]:
        rng = streams.rng(streams.BATCH_SAMPLES, self.seed, step)
        return [rng.choice(s, size=min(self.k, s), replace=False) for s in sizes]


class BatchModel(torch.nn.Module):
    """Wraps the model so one forward call covers evidence pooling too (what DDP needs to see)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model(**batch_inputs(self.model, batch))
