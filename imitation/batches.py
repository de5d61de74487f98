"""From stored episodes to model inputs: features, pooled evidence, tokens, soft labels.

``EpisodeArrays`` rebuilds what every agent observed from an episode's stored states (the
dataset stores states, never observations). ``BatchSampler`` picks episodes and samples
deterministically from (seed, step), so a resumed run reads exactly the batches it would have.
``mirrorhall.imitation.model_io.batch_logits`` runs the model on a batch (``PromptTable`` gives each
distinct prompt an id, so a batch encodes it once).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from mirrorhall import streams
from mirrorhall.envs.core import WorldConfig, WorldCore
from mirrorhall.envs.perception import (
    entity_features,
    gem_sightings,
    look_history,
    own_features,
    unseen_gems,
)
from mirrorhall.imitation.model_io import batch_logits, encode_prompts
from mirrorhall.imitation.shards import StoredEpisode
from mirrorhall.imitation.tokenizer import Tokenizer


@dataclass
class EpisodeArrays:
    """One episode as the model reads it."""

    episode: int  # global episode index in the dataset
    own: np.ndarray  # (T + 1, N, 5, F) int8: every agent's own situation as it sees it
    feats: np.ndarray | None  # (T + 1, Ni, Nj, 5, F) int8: what observer i sees of j; None under full view
    visible: np.ndarray | None  # (T + 1, Ni, Nj) bool; None under full view (everyone sees everyone)
    actions: np.ndarray  # (T, N)
    agent: np.ndarray  # (S,) samples
    t: np.ndarray  # (S,)
    kind: np.ndarray  # (S,)
    prompts: tuple[str, ...]  # the episode's distinct prompt texts
    prompt_index: np.ndarray  # (S,) int32 into ``prompts``
    label: np.ndarray  # (S, 5)
    target: np.ndarray | None = None  # (S,) the agent OTHER and SECOND samples name (-1: none)


def episode_arrays(ep: StoredEpisode, world: WorldConfig, pairs: bool | None = None,
                   place: bool = False, perspective: bool = False, pickups: bool = False) -> EpisodeArrays:
    """An episode's model arrays. ``pairs`` (default: only under partial view) also builds the
    (Ni, Nj) table of what every observer sees of every agent; under full view each agent's own
    row is all the model needs (``mirrorhall.envs.perception.own_features``). ``place``,
    ``perspective``, ``pickups``: the features carry those columns (``ModelConfig.place``,
    ``.perspective``: the observers' estimates of what each agent saw, ``look_history``, from the
    episode's start; ``.pickups``: what each observer saw of the gems a step before)."""
    core = WorldCore(world)
    states = ep.world_states(world)
    if pairs is None:
        pairs = world.view_radius is not None
    belief = look_history(core, states) if perspective else None  # (T + 1, Ni, Nj, C, H*W)
    before = None
    if pickups:  # (T + 1, Ni, C, H*W): what each observer saw a step before, nothing before step 0
        before = np.concatenate([unseen_gems(world, 1, world.n_agents), gem_sightings(core, states)[:-1]])
    feats = visible = None
    n = world.n_agents
    if pairs:
        feats, visible = entity_features(core, states, place=place, belief=belief, before=before)
        feats = feats.astype(np.int8)  # features are in {-1, 0, 1}: int8 keeps a whole dataset in memory
        own = feats[:, np.arange(n), np.arange(n)]  # the table's diagonal (equal to own_features, tested)
    else:
        own = own_features(core, states, place, None if belief is None else belief[:, np.arange(n), np.arange(n)],
                           before)
    prompts, index = np.unique(np.asarray(ep.prompt, dtype=object).astype(str), return_inverse=True)
    return EpisodeArrays(episode=ep.episode, own=own.astype(np.int8), feats=feats,
                         visible=visible, actions=ep.actions.astype(np.int64), agent=ep.agent, t=ep.t, kind=ep.kind,
                         prompts=tuple(str(p) for p in prompts), prompt_index=index.astype(np.int32),
                         label=ep.label, target=np.asarray(ep.target, dtype=np.int64))


class PromptTable:
    """Every distinct prompt text the trainer meets, tokenized once: samples carry an id into
    ``tokens``, and a batch encodes each distinct prompt once (``model_io.batch_logits``).

    With an n-gram tokenizer a word is a row of ids (``NgramTokenizer.encode``); the table then
    keeps each distinct word row once (``words`` (U, W), row 0 the padding) and ``tokens`` holds
    indices into it, so a table of many prompts stays as small as a word tokenizer's.
    """

    def __init__(self, tokenizer: Tokenizer, max_len: int):
        self.tokenizer, self.max_len = tokenizer, max_len
        self.index: dict[str, int] = {}
        self._rows: list[np.ndarray] = []
        self._tokens: torch.Tensor | None = None
        self._word_index: dict[bytes, int] | None = None if tokenizer.width is None else {}
        self._word_rows: list[np.ndarray] = [] if tokenizer.width is None else [np.zeros(tokenizer.width, np.int64)]
        self._words: torch.Tensor | None = None

    def _row(self, text: str) -> np.ndarray:
        ids = encode_prompts(self.tokenizer, [text], self.max_len).numpy()[0]  # (L,) or (L, W)
        if self._word_index is None:
            return ids
        out = np.zeros(self.max_len, dtype=np.int64)
        for pos, row in enumerate(ids):
            if row[0] == 0:
                break
            key = row.tobytes()
            j = self._word_index.get(key)
            if j is None:
                j = self._word_index[key] = len(self._word_rows)
                self._word_rows.append(row)
                self._words = None
            out[pos] = j
        return out

    def ids(self, ep: EpisodeArrays) -> np.ndarray:
        """(S,) int64 table ids of an episode's samples (new texts are added)."""
        return self.add(ep.prompts)[ep.prompt_index]

    def add(self, texts) -> np.ndarray:
        """(len(texts),) int64 table ids of ``texts``, adding the new ones."""
        table = np.empty(len(texts), dtype=np.int64)
        for k, text in enumerate(texts):
            i = self.index.get(text)
            if i is None:
                i = self.index[text] = len(self._rows)
                self._rows.append(self._row(text))
                self._tokens = None
            table[k] = i
        return table

    @property
    def tokens(self) -> torch.Tensor:
        """(P, max_len) token ids of every text, in id order (with an n-gram tokenizer: indices
        into ``words``)."""
        if self._tokens is None:
            rows = self._rows or [np.zeros(self.max_len, dtype=np.int64)]
            self._tokens = torch.from_numpy(np.stack(rows))
        return self._tokens

    @property
    def words(self) -> torch.Tensor | None:
        """(U, W) the distinct word rows of an n-gram tokenizer (row 0: padding); None for words."""
        if self._word_index is None:
            return None
        if self._words is None:
            self._words = torch.from_numpy(np.stack(self._word_rows))
        return self._words


@dataclass
class Batch:
    """Episodes stacked (E of them) and the samples drawn from them."""

    own: torch.Tensor  # (E, T + 1, N, 5, F)
    feats: torch.Tensor | None  # (E, T + 1, N, N, 5, F), None when the episodes hold only ``own``
    visible: torch.Tensor | None  # (E, T + 1, N, N) bool
    actions: torch.Tensor  # (E, T, N)
    episode: torch.Tensor  # (S,) index into E
    agent: torch.Tensor  # (S,)
    t: torch.Tensor  # (S,)
    kind: torch.Tensor  # (S,)
    prompt: torch.Tensor  # (S,) ids into prompt_tokens
    prompt_tokens: torch.Tensor  # (P, L) token ids of the prompt table (indices into prompt_words if given)
    label: torch.Tensor  # (S, 5)
    prompt_words: torch.Tensor | None = None  # (U, W) an n-gram tokenizer's word rows (PromptTable.words)
    target: torch.Tensor | None = None  # (S,) the agent OTHER and SECOND samples name (-1: none)
    full_view: bool = False

    def table_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """(K, L) or (K, L, W) the model's token ids of prompt-table rows ``ids`` (K,)."""
        tokens = self.prompt_tokens[ids]
        return tokens if self.prompt_words is None else self.prompt_words[tokens]

    @property
    def tokens(self) -> torch.Tensor:
        """(S, L) or (S, L, W) each sample's prompt tokens."""
        return self.table_tokens(self.prompt)

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        moved = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device, non_blocking=True))
                 for f in fields(self) if f.name != "full_view"}
        return Batch(**moved, full_view=self.full_view)


def make_batch(episodes: list[EpisodeArrays], picks: list[np.ndarray], prompts: PromptTable,
               full_view: bool = False, prompt_ids: list[np.ndarray] | None = None) -> Batch:
    """Stack episodes (all of one length) and the chosen sample indices of each. ``prompt_ids``
    (each episode's ``prompts.ids``) saves looking the texts up again."""
    ep_idx = np.concatenate([np.full(len(p), e) for e, p in enumerate(picks)])
    if prompt_ids is None:
        prompt_ids = [prompts.ids(ep) for ep in episodes]

    def cat(name):
        return np.concatenate([getattr(ep, name)[p] for ep, p in zip(episodes, picks, strict=True)])

    pairs = all(e.feats is not None for e in episodes)
    return Batch(
        own=torch.from_numpy(np.stack([e.own for e in episodes])).float(),
        feats=torch.from_numpy(np.stack([e.feats for e in episodes])).float() if pairs else None,
        visible=torch.from_numpy(np.stack([e.visible for e in episodes])) if pairs else None,
        actions=torch.from_numpy(np.stack([e.actions for e in episodes])),
        episode=torch.from_numpy(ep_idx), agent=torch.from_numpy(cat("agent")),
        t=torch.from_numpy(cat("t")), kind=torch.from_numpy(cat("kind")),
        prompt=torch.from_numpy(np.concatenate([ids[p] for ids, p in zip(prompt_ids, picks, strict=True)])),
        prompt_tokens=prompts.tokens, label=torch.from_numpy(cat("label")), prompt_words=prompts.words,
        target=torch.from_numpy(cat("target")) if all(e.target is not None for e in episodes) else None,
        full_view=full_view,
    )


def unreadable_batch(batch: Batch, share: float, rng: np.random.Generator, pools: dict, draws: int = 0) -> Batch:
    """The batch with a ``share`` of its samples of ``pools``' kinds (drawn from ``rng``) asked a
    prompt of ``pools`` instead: table ids of ``prompts.unreadable`` texts, ``pools[Kind.SELF]``
    (P,), ``pools[Kind.OTHER]`` and ``pools[Kind.SECOND]`` (N, P) by the agent named. Labels stay.
    ``draws`` > 0: each kind offers this batch only ``draws`` pool entries (per agent named, the
    same positions), and each chosen sample takes one of them."""
    pick = torch.from_numpy(rng.random(len(batch.prompt)) < share)
    prompt = batch.prompt.clone()
    for kind, pool in pools.items():
        rows = pick & (batch.kind == int(kind))
        size = pool.shape[-1]
        if 0 < draws < size:
            offered = rng.choice(size, size=draws, replace=False)
            choice = torch.from_numpy(offered[rng.integers(draws, size=int(rows.sum()))])
        else:
            choice = torch.from_numpy(rng.integers(size, size=int(rows.sum())))
        prompt[rows] = pool[choice] if pool.dim() == 1 else pool[batch.target[rows], choice]
    return replace(batch, prompt=prompt)


def drop_words(batch: Batch, rate: float, rng: np.random.Generator, keep: torch.Tensor) -> Batch:
    """Word dropout: the batch with each word of each of its distinct prompts read as ``<unk>``
    with probability ``rate`` (drawn from ``rng``), except the ids ``keep`` (V,) marks: padding
    and numbers, whose loss would hide which agent is meant. With an n-gram tokenizer the word
    keeps its n-grams, so training also reads words through their pieces alone, as it must read
    a word it never saw."""
    uniq, inverse = torch.unique(batch.prompt, return_inverse=True)
    tokens = batch.table_tokens(uniq).clone()  # (U, L[, W]), the batch's own copy
    words = tokens if tokens.dim() == 2 else tokens[..., 0]  # a view: writes reach tokens
    drop = torch.from_numpy(rng.random(tuple(words.shape)) < rate).to(words.device) & ~keep.to(words.device)[words]
    words[drop] = 1
    return replace(batch, prompt=inverse, prompt_tokens=tokens, prompt_words=None)


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
        return batch_logits(self.model, batch)
