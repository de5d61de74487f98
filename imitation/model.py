"""The multi-policy model p_theta(a | prompt, history), shared by every agent.

Shape of the computation (the Bayes observer's own shape, see docs/model.md):

1. Evidence. For every observed step of every visible agent j, an MLP reads j's per-action
   features (``mirrorhall.envs.perception``) and the action j took, giving an evidence vector.
2. Characters. Each agent's evidence is summed over the steps the ego has seen it (a running sum,
   so acting is incremental); the sum, the mean and log(1 + count) make a character token. With
   ``recency`` half-lives the character also reads recency-weighted means of the evidence (running
   sums that decay each step, still incremental), so it can tell what the agent does *now* (its
   phase) from what it did on average.
3. Prompt. A small Transformer encodes the prompt's words into a vector p (each distinct prompt
   once per batch). A word is its embedding, plus, with an n-gram tokenizer, the mean of its
   character n-grams' bucket embeddings (``embed_words``). Positions are ``absolute`` (learned
   embeddings of token positions and a leading summary token) or ``relative`` (rotary positions
   inside the attention and a pooling query that reads no position: the encoding depends on the
   words' order and distances, never on where the prompt starts). p attends over the character tokens, each tagged with the agent's id embedded
   with the same table as the number words (so "agent 3" binds to the agent wearing 3) and with a
   flag for the ego. p, what it read and the ego's own character make a policy vector z.
4. Head. Each action's logit is a utility linear in the ego's features for that action, with
   weights read from z (exactly the form of a trait persona, softmax(beta * U)), plus a
   per-action bias read from z (random agents prefer actions whatever the state), plus an MLP of
   [z, the features, the action's identity] for what is neither (mixtures, mirrors).

The model never sees personas, traits or labels: only features computed from the ego's
observations and the prompt text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

from mirrorhall.envs.core import N_ACTIONS
from mirrorhall.envs.perception import ego_column, n_features

SIZE_LIMITS = {"n_colors": 8, "vocab_size": 2**24, "d_model": 2**16, "d_evidence": 2**16, "n_heads": 2**10,
               "n_layers": 2**10, "d_head_mlp": 2**16, "max_prompt_len": 2**16, "max_agents": 2**16}
"""Upper bounds of the sizes a ModelConfig accepts (n_colors: the world's at most 8 colours)."""
POSITIONS = ("absolute", "relative")
MAX_RECENCY = 8
"""At most this many recency half-lives (``ModelConfig.recency``)."""
NEW_FIELDS = {"ngram_buckets": 0, "positions": "absolute", "recency": (), "place": (), "perspective": False,
              "pickups": False}
"""Fields added since the first checkpoints, with the values that mean the old model: a config
saved without them reads as before."""


def check_recency(value, name: str = "recency") -> tuple[float, ...]:
    """Recency half-lives as a tuple of floats, or ValueError naming ``name``."""
    ok = isinstance(value, tuple | list) and len(value) <= MAX_RECENCY and all(
        isinstance(h, int | float) and not isinstance(h, bool) and 0 < h <= 1e4 for h in value)
    if not ok:
        raise ValueError(f"{name} must be at most {MAX_RECENCY} half-lives in (0, 10000] steps, got {value!r}")
    return tuple(float(h) for h in value)


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the model. Saved in every checkpoint."""

    n_colors: int = 4
    """Gem colours of the worlds the model reads (fixes the feature width)."""
    vocab_size: int = 324
    """Tokenizer vocabulary size."""
    d_model: int = 128
    """Width of prompt and character tokens."""
    d_evidence: int = 128
    """Width of per-step evidence vectors."""
    n_heads: int = 4
    n_layers: int = 2
    d_head_mlp: int = 128
    """Hidden width of the per-action head."""
    max_prompt_len: int = 32
    max_agents: int = 64
    number_tokens: tuple[int, ...] = ()
    """Token id of the word "j" for each agent id j (ties agent ids to number words)."""
    ngram_buckets: int = 0
    """Hashed character n-gram buckets of the tokenizer (0: a word tokenizer, no n-gram table)."""
    positions: str = "absolute"
    """How the prompt encoder sees word order: absolute (learned position embeddings) or relative
    (rotary, with position-free pooling)."""
    recency: tuple[float, ...] = ()
    """Half-lives, in steps, of recency-weighted evidence: beside the all-time sum, each agent's
    character also reads a running mean of its evidence in which a step h steps old weighs half as
    much as the newest (``decay``). What an agent did lately tells its phase (the waypoint it heads
    for, the colour it collects now, the path it just walked), which the all-time sum averages away.
    Empty: the all-time sum alone (the models saved before this field)."""
    place: tuple[int, ...] = ()
    """(height, width) of the grid whose place columns the features carry (where each move leads,
    ``perception``); the model then reads worlds of that size only. Empty: no place columns."""
    perspective: bool = False
    """The features also carry the perspective columns (``perception.look``): for every agent, the
    gem columns read from where, as far as the observer saw, that agent last saw gems. An agent that
    acts on what it remembers (a believer after a gem moved out of its sight) has a utility linear in
    them. The model then keeps, per agent it acts for, that estimate from step to step."""
    pickups: bool = False
    """The features also carry the pickup columns (``perception.pickup_columns``): for every agent,
    the colour of the gem it has just collected, as far as the observer saw. A collector's wants
    change with what it collects; with these columns its evidence says when and to what. The model
    then keeps, per agent it acts for, what it saw of the gems one step before."""

    def __post_init__(self):
        for f, hi in SIZE_LIMITS.items():
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"model config {f} must be a positive integer, got {v!r}")
            if v > hi:  # past these even the meta device cannot size the tensors
                raise ValueError(f"model config {f} must be at most {hi}, got {v!r}")
        b = self.ngram_buckets
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= SIZE_LIMITS["vocab_size"]:
            raise ValueError(f"model config ngram_buckets must be an integer in 0..{SIZE_LIMITS['vocab_size']}, "
                             f"got {b!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"model config positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        if self.positions == "relative" and (self.d_model // self.n_heads) % 2:
            raise ValueError(f"relative positions rotate pairs of dimensions: d_model / n_heads "
                             f"({self.d_model // self.n_heads}) must be even")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if len(self.number_tokens) < self.max_agents:
            raise ValueError("number_tokens must give a token id for every agent id < max_agents")
        for j, x in enumerate(self.number_tokens):  # ids index the embedding table: in range or refused
            if isinstance(x, bool) or not isinstance(x, int | np.integer) or not 0 <= x < self.vocab_size:
                raise ValueError(f"model config number_tokens[{j}] must be a token id in 0..{self.vocab_size - 1}, "
                                 f"got {x!r}")
        object.__setattr__(self, "number_tokens", tuple(int(x) for x in self.number_tokens))
        object.__setattr__(self, "recency", check_recency(self.recency, "model config recency"))
        pl = self.place
        if not isinstance(pl, tuple | list) or len(pl) not in (0, 2) or not all(
                isinstance(x, int) and not isinstance(x, bool) and 3 <= x <= 64 for x in pl):
            raise ValueError(f"model config place must be empty or (height, width), each 3..64, got {pl!r}")
        object.__setattr__(self, "place", tuple(pl))
        for flag in ("perspective", "pickups"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"model config {flag} must be true or false, got {getattr(self, flag)!r}")

    @property
    def decay(self) -> tuple[float, ...]:
        """Per-step decay factor of each recency half-life h: 2 ** (-1 / h)."""
        return tuple(2.0 ** (-1.0 / h) for h in self.recency)

    @property
    def memory_width(self) -> int:
        """Width of an agent's memory row (``char_sum``): the all-time evidence sum, then each
        recency's decayed evidence sum, then each recency's decayed count."""
        return self.d_evidence * (1 + len(self.recency)) + len(self.recency)

    @property
    def n_features(self) -> int:
        return n_features(self.n_colors, self.place, self.perspective, self.pickups)

    def to_json(self) -> dict:
        d = asdict(self)
        d["number_tokens"] = list(self.number_tokens)
        d["recency"] = list(self.recency)
        d["place"] = list(self.place)
        return d

    @classmethod
    def from_json(cls, data: dict) -> ModelConfig:
        if not isinstance(data, dict):
            raise ValueError(f"model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        missing = known - set(data) - set(NEW_FIELDS)  # a config saved before a new field reads as before
        unknown = set(data) - known
        if missing or unknown:
            raise ValueError(f"model config does not match this code: missing {sorted(missing)}, "
                             f"unknown {sorted(unknown)}")
        d = {**NEW_FIELDS, **data}
        d["number_tokens"] = tuple(d["number_tokens"])
        for key in ("recency", "place"):
            if isinstance(d[key], list):
                d[key] = tuple(d[key])
        return cls(**d)

    @classmethod
    def for_tokenizer(cls, tokenizer, **kwargs) -> ModelConfig:
        max_agents = kwargs.get("max_agents", cls.max_agents)
        numbers = tuple(tokenizer.index.get(str(j), 1) for j in range(max_agents))
        return cls(vocab_size=len(tokenizer), number_tokens=numbers, ngram_buckets=tokenizer.buckets, **kwargs)


def rotary_frequencies(dh: int, device=None) -> torch.Tensor:
    """(dh/2,) the angle per position of each rotated pair: 10000^(-2i/dh)."""
    return 10000.0 ** (-torch.arange(0, dh, 2, device=device, dtype=torch.float32) / dh)


def softmax32(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension in float32, returned in the scores' dtype: CPU autocast
    would run it in bf16, both coarser and (on rows this short) slower."""
    return scores.float().softmax(-1).to(scores.dtype)


def rotate(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rotary positions: (..., L, H, dh) vectors rotated pairwise by angles pos * 10000^(-2i/dh),
    so that a query at i and a key at j meet through i - j only. ``pos`` (L,) float."""
    dh = x.shape[-1]
    angle = pos[:, None].float() * rotary_frequencies(dh, x.device)[None]  # (L, dh/2)
    cos, sin = angle.cos()[:, None].to(x.dtype), angle.sin()[:, None].to(x.dtype)  # (L, 1, dh/2)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def rotation_tables(pos: torch.Tensor, width: int, dh: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``rotate``'s angles as two float32 (T, width) tables for vectors laid flat, heads of ``dh``
    one after another: each pair's cosine twice, and its sine signed for the pair turned a quarter
    ((x1, x2) -> (-x2, x1)), so that ``rotate(x) == x * cos + quarter_turn(x) * sin`` bit for bit
    (tables cast to x's dtype): contiguous products over all heads (and q and k together) instead
    of strided ones per half."""
    freq = rotary_frequencies(dh, pos.device).repeat_interleave(2).repeat(width // dh)  # (width,)
    angle = pos[:, None].float() * freq[None]  # (T, width)
    sign = torch.tensor([-1.0, 1.0], device=pos.device).repeat(width // 2)
    return angle.cos(), angle.sin() * sign


def quarter_turn(x: torch.Tensor) -> torch.Tensor:
    """(..., W) -> each pair of neighbouring entries swapped; ``rotation_tables``' sine signs it."""
    return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)


class RelativeLayer(nn.Module):
    """A pre-norm Transformer layer whose attention sees positions only through rotary q and k.

    It reads the prompts' words packed, without their padding: every per-word part (norms,
    projections, feed-forward, rotation) runs on the words alone, and only attention lays them
    out by prompt. The prompts of a batch differ in length, so this skips about half the work
    of a padded layout; the result is the padded layer's (tested)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, pad: torch.Tensor, where: torch.Tensor,
                tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x (T, d) the words of P prompts packed, ``where`` (T,) their flat places in the (P, L)
        layout whose padding is ``pad`` (P, L) -> (T, d). ``tables``: ``rotation_tables`` of the
        words' positions for q and k (width 2d), computed once for all layers by the encoder."""
        (p, length), (t, d), h = pad.shape, x.shape, self.heads
        qkv = self.qkv(self.norm1(x))  # (T, 3d): q, k, v, heads one after another
        qk = qkv[:, : 2 * d]
        cos, sin = (table.to(qkv.dtype) for table in tables)
        qkv = torch.cat([qk * cos + quarter_turn(qk) * sin, qkv[:, 2 * d:]], dim=1)  # q and k rotated
        laid = qkv.new_zeros(p * length, 3, h, d // h).index_copy(0, where, qkv.view(t, 3, h, d // h))
        q, k, v = laid.view(p, length, 3, h, d // h).unbind(2)  # (P, L, H, dh)
        scores = torch.einsum("pihd,pjhd->phij", q, k) * (d // h) ** -0.5  # (P, H, L, L)
        scores = scores.masked_fill(pad[:, None, None], float("-inf"))
        read = torch.einsum("phij,pjhd->pihd", softmax32(scores), v).reshape(p * length, d)
        x = x + self.out(read.index_select(0, where))
        return x + self.ff(self.norm2(x))


class RelativeEncoder(nn.Module):
    """Rotary-position layers and a pooling query that reads the last layer's words with no
    position: shifting a prompt (padding before it) leaves its vector unchanged."""

    def __init__(self, d: int, heads: int, layers: int):
        super().__init__()
        self.heads = heads
        self.layers = nn.ModuleList(RelativeLayer(d, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.pool = nn.MultiheadAttention(d, heads, batch_first=True)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, where: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """x (T, d) words packed at flat places ``where`` (T,) of the (P, L) layout with padding
        ``pad`` (``RelativeLayer``), query (1, 1, d) -> (P, d)."""
        p, length = pad.shape
        d = x.shape[-1]
        tables = rotation_tables(where % length, 2 * d, d // self.heads)  # the same positions in every layer
        for layer in self.layers:
            x = layer(x, pad, where, tables)
        x = self.norm(x)
        laid = x.new_zeros(p * length, x.shape[-1]).index_copy(0, where, x).view(p, length, -1)
        read, _ = self.pool(query.expand(p, 1, -1), laid, laid, key_padding_mask=pad, need_weights=False)
        return read[:, 0]


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_hidden), nn.GELU(),
                         nn.Linear(d_hidden, d_out))


class MultiPolicyModel(nn.Module):
    """p_theta(a | prompt, history); see the module docstring."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        f, d, de = config.n_features, config.d_model, config.d_evidence
        fe = f - 1  # evidence ignores the distance-to-observer column: it is the same for every observer
        self.evidence_net = _mlp(3 * fe + N_ACTIONS * fe + N_ACTIONS, de, de)
        r = len(config.recency)
        self.char_proj = nn.Sequential(nn.Linear(2 * de + 1 + r * (de + 1), d), nn.GELU(), nn.Linear(d, d))
        self.register_buffer("memory_decay", torch.tensor(
            [1.0] * de + [g for g in config.decay for _ in range(de)] + list(config.decay)), persistent=False)
        self.tok_emb = nn.Embedding(config.vocab_size, d, padding_idx=0)
        if config.positions == "absolute":
            self.pos_emb = nn.Embedding(config.max_prompt_len + 1, d)
        self.ego_emb = nn.Embedding(2, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        if config.positions == "absolute":
            layer = nn.TransformerEncoderLayer(d, config.n_heads, 4 * d, dropout=0.0, batch_first=True,
                                               norm_first=True, activation="gelu")
            self.prompt_encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        else:
            self.prompt_encoder = RelativeEncoder(d, config.n_heads, config.n_layers)
        self.prompt_norm = nn.LayerNorm(d)
        if config.ngram_buckets:
            # bucket b is row 1 + b, row 0 pads; zeros at start, so a bucket training never met adds
            # nothing, and so does <unk> (an unseen word is read through its trained pieces)
            self.ngram_emb = nn.EmbeddingBag(config.ngram_buckets + 1, d, mode="mean", padding_idx=0)
            with torch.no_grad():
                self.ngram_emb.weight.zero_()
                self.tok_emb.weight[1].zero_()
        self.entity_norm = nn.LayerNorm(d)
        self.attend = nn.MultiheadAttention(d, config.n_heads, batch_first=True)
        self.mix = _mlp(3 * d, 2 * d, d)
        self.head = _mlp(d + 2 * f + N_ACTIONS, config.d_head_mlp, 1)
        self.utility = nn.Linear(d, f)  # a linear utility over the action's features, weights from z
        self.action_bias = nn.Linear(d, N_ACTIONS)  # state-independent preferences (random agents)
        self.register_buffer("number_tokens", torch.tensor(config.number_tokens, dtype=torch.long),
                             persistent=False)

    @staticmethod
    def _action_view(feats: torch.Tensor) -> torch.Tensor:
        """(..., 5, F) -> (..., 5, 2F): each action's features and their difference from the mean."""
        return torch.cat([feats, feats - feats.mean(-2, keepdim=True)], dim=-1)

    def evidence(self, feats: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(..., 5, F) features and (...) actions taken -> (..., d_evidence) evidence.

        The distance-to-observer column (``ego_column``) is left out, so under full observability an
        agent's evidence is the same for every observer and is computed once.
        """
        ego = ego_column(self.config.n_colors)
        feats = torch.cat([feats[..., :ego], feats[..., ego + 1:]], dim=-1)
        onehot = nn.functional.one_hot(actions.clamp(min=0), N_ACTIONS).to(feats.dtype)  # (..., 5)
        chosen = (feats * onehot[..., None]).sum(-2)  # (..., F)
        mean = feats.mean(-2)
        x = torch.cat([chosen, chosen - mean, mean, feats.flatten(-2), onehot], dim=-1)
        return self.evidence_net(x)

    def embed_words(self, tokens: torch.Tensor) -> torch.Tensor:
        """(P, L) word ids, or (P, L, W) n-gram tokenizer rows ([word id, 1 + bucket, ...]) ->
        (P, L, d): the word's embedding plus the mean of its n-grams' (none for numbers)."""
        if tokens.dim() == 2:
            return self.tok_emb(tokens)
        if not self.config.ngram_buckets:
            raise ValueError("this model has no n-gram table: encode prompts with its own (word) tokenizer")
        x = self.tok_emb(tokens[..., 0])  # (P, L, d)
        grams = tokens[..., 1:].flatten(0, 1)  # (P * L, W - 1), 0 pads
        if grams.shape[-1]:
            x = x + self.ngram_emb(grams).view_as(x)  # an all-padding row adds zeros
        return x

    def encode_prompts(self, tokens: torch.Tensor) -> torch.Tensor:
        """(P, L) or (P, L, W) token ids (``embed_words``) -> (P, d) prompt vectors. Padding (a word
        id of 0) is ignored."""
        words = tokens if tokens.dim() == 2 else tokens[..., 0]  # (P, L)
        p, length = words.shape
        if self.config.positions == "relative":
            pad = words == 0
            pad[:, 0] &= ~pad.all(1)  # a prompt with no words reads its (zero) padding: no empty softmax
            where = (~pad).flatten().nonzero().squeeze(1)  # the words' flat places, padding skipped
            x = self.embed_words(tokens.flatten(0, 1).index_select(0, where)[None])[0]  # (T, d)
            return self.prompt_norm(self.prompt_encoder(x, pad, where, self.cls))
        x = self.embed_words(tokens)
        x = x + self.pos_emb.weight[1: length + 1][None]
        x = torch.cat([self.cls.expand(p, 1, -1) + self.pos_emb.weight[0], x], dim=1)
        pad = torch.cat([torch.zeros(p, 1, dtype=torch.bool, device=tokens.device), words == 0], dim=1)
        return self.prompt_norm(self.prompt_encoder(x, src_key_padding_mask=pad)[:, 0])

    def prompt_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """(S, L) or (S, L, W) -> (S, d), encoding each distinct prompt of the batch once."""
        tokens = trim_prompts(tokens)
        uniq, inverse = torch.unique(tokens, dim=0, return_inverse=True)
        return self.encode_prompts(uniq).index_select(0, inverse)

    def memory_terms(self, ev: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """What one step adds to an agent's memory row (``ModelConfig.memory_width``): evidence
        ``ev`` (..., de), already zero where unseen, and ``seen`` (...) 0/1. A row is updated as
        ``row * memory_decay + memory_terms``: the all-time sum, each recency's decayed sum and
        decayed count."""
        r = len(self.config.recency)
        if not r:
            return ev
        count = seen.to(ev.dtype)[..., None].expand(*ev.shape[:-1], r)
        return torch.cat([ev] * (1 + r) + [count], dim=-1)

    def characters(self, char_sum: torch.Tensor, char_count: torch.Tensor) -> torch.Tensor:
        """(..., N, memory_width) memory rows (summed evidence first) and (..., N) counts ->
        (..., N, d) character tokens: the sum, the mean, log(1 + count), and each recency's
        weighted mean and decayed count."""
        de, r = self.config.d_evidence, len(self.config.recency)
        total = char_sum[..., :de]
        count = char_count.unsqueeze(-1)
        parts = [total / 10.0, total / count.clamp(min=1), torch.log1p(count)]
        if r:
            weight = char_sum[..., de * (1 + r):]  # (..., N, R) decayed counts
            recent = char_sum[..., de: de * (1 + r)].unflatten(-1, (r, de)) / weight.clamp(min=1e-4)[..., None]
            parts += [recent.flatten(-2), weight]
        return self.char_proj(torch.cat(parts, dim=-1))

    def forward(self, tokens: torch.Tensor, char_sum: torch.Tensor, char_count: torch.Tensor,
                ego: torch.Tensor, entity_mask: torch.Tensor, query: torch.Tensor,
                prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (S, 5).

        tokens (S, L) prompt token ids (0 = padding); char_sum (S, N, memory_width) summed evidence
        of each agent as the ego saw it (and its recency-weighted sums, ``memory_terms``); char_count (S, N) steps summed; ego (S,) the ego's agent id;
        entity_mask (S, N) agents the ego can see now; query (S, 5, F) the ego's own features;
        prompt (S, d) precomputed prompt vectors (``prompt_vectors``), to skip the prompt encoder.
        """
        p = self.prompt_vectors(tokens) if prompt is None else prompt  # (S, d)
        return self.decide(p, self.characters(char_sum, char_count), ego, entity_mask, query)

    def decide(self, p: torch.Tensor, chars: torch.Tensor, ego: torch.Tensor, entity_mask: torch.Tensor,
               query: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (S, 5) from prompt vectors p (S, d) and character tokens (``characters``).

        chars (S, N, d), or (U, N, d) shared by several samples with ``rows`` (S,) naming each
        sample's row (training computes each character once for every sample that shares it); the
        other arguments as ``forward``. The attention is ``self.attend``'s computation written out,
        so that keys and values are projected once per shared row and only the ego's own key per
        sample (the ego flag is the one per-sample part of a key).
        """
        n = chars.shape[1]
        s = p.shape[0]
        if rows is None:
            rows = torch.arange(s, device=p.device)
        d, heads = self.config.d_model, self.config.n_heads
        dh = d // heads
        x = chars + self.tok_emb(self.number_tokens[:n])[None]  # (U, N, d): agent j wears the word "j"
        w, b = self.attend.in_proj_weight, self.attend.in_proj_bias
        kv_other = nn.functional.linear(self.entity_norm(x + self.ego_emb.weight[0]), w[d:], b[d:])  # (U, N, 2d)
        # gathers by index_select: its backward adds rows (index_add_), where indexing's sorts them first
        own = self.entity_norm(x.flatten(0, 1).index_select(0, rows * n + ego) + self.ego_emb.weight[1])  # (S, d) the ego's own key
        k, v = kv_other.index_select(0, rows).view(s, n, 2, heads, dh).unbind(2)  # (S, N, H, dh), the ego's slot still shared
        k_own, v_own = nn.functional.linear(own, w[d:], b[d:]).view(s, 2, heads, dh).unbind(1)  # (S, H, dh)
        q = nn.functional.linear(p, w[:d], b[:d]).view(s, heads, dh) * dh ** -0.5
        scores = torch.einsum("shd,snhd->shn", q, k)  # (S, H, N)
        at_ego = ego[:, None, None].expand(-1, heads, 1)
        scores = scores.scatter(2, at_ego, (q * k_own).sum(-1, keepdim=True))  # the ego's own key in its slot
        scores = scores.masked_fill(~entity_mask[:, None], float("-inf"))
        att = softmax32(scores)  # (S, H, N)
        read = torch.einsum("shn,snhd->shd", att, v)
        # the ego's slot read the shared value: swap it for the ego's own
        v_ego = v.flatten(0, 1).index_select(0, torch.arange(s, device=p.device) * n + ego)  # (S, H, dh)
        read = read + att.gather(2, at_ego) * (v_own - v_ego)
        read = read.reshape(s, d)
        read = self.attend.out_proj(read)  # (S, d)
        z = self.mix(torch.cat([p, read, own], dim=-1))  # (S, d)
        first = self.head[0]  # the head's first layer, split: z once per sample, not once per action
        f2 = 2 * query.shape[-1]
        hz = nn.functional.linear(z, first.weight[:, :d], first.bias)  # (S, h)
        ha = nn.functional.linear(self._action_view(query), first.weight[:, d:d + f2])  # (S, 5, h)
        hi = first.weight[:, d + f2:].T  # (5, h): each action's identity
        hidden = hz[:, None] + ha + hi[None]
        utility = (query * self.utility(z)[:, None].float()).sum(-1)  # (S, 5)
        # summed in float32 even under bf16 autocast (training's --precision bf16)
        return self.head[1:](hidden).squeeze(-1).float() + utility + self.action_bias(z).float()  # (S, 5)


def trim_prompts(tokens: torch.Tensor) -> torch.Tensor:
    """Token ids (S, L[, W]) cut to the longest prompt's length (at least 1)."""
    words = tokens if tokens.dim() == 2 else tokens[..., 0]
    return tokens[:, : int((words != 0).sum(1).max().clamp(min=1))]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
