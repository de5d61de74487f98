"""The one way into the model: prompt text to tokens, what agents saw to pooled evidence, and the
keyword arguments of ``MultiPolicyModel.forward``.

Every caller goes through here: training (``batch_inputs``), probes (``gather_inputs``), acting
from the world state (``ModelPolicy`` in ``mirrorhall.imitation.policy``), acting from nothing but
PettingZoo observations (``ObservationActor``, which the RLlib module wraps). Two modes share one
evidence function:

batch mode
    a whole recorded history at once: exclusive running sums over time of every agent's evidence
    as each observer saw it (``pooled_evidence``), gathered at the samples asked for;
incremental mode
    acting step by step: a ``Memory`` per driven agent holds the same sums, and each step adds the
    evidence of the step just taken (``remember``), so a step costs one evidence pass whatever the
    history length.

Features always come from the perception module (``mirrorhall.envs.perception``); this module
never looks at a world state itself.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from mirrorhall.envs.core import WorldConfig, WorldCore
from mirrorhall.envs.perception import View, decode, view_features, view_gem_sightings, view_look
from mirrorhall.errors import CheckpointError, ConfigError, InputWarning
from mirrorhall.imitation.model import trim_prompts
from mirrorhall.imitation.tokenizer import normalize

DEFAULT_PROMPT = "behave as yourself"
_AGENT_REF = re.compile(r"\bagent[\s_]*(?:(?:number|no|wearing|labell?ed)\s+)?(\d+)", re.IGNORECASE)
"""An agent named in a prompt: "agent 3", "agent number 3", "the agent wearing 3" (after ``normalize``)."""


# --- prompts --------------------------------------------------------------------------------


def _short(text: str, limit: int = 80) -> str:
    """``repr`` of a text for an error message, cut to about ``limit`` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit + 2 else shown[:limit] + f"... ({len(text)} characters)"


def check_prompt(text: str, n_agents: int) -> str:
    """A prompt must be non-empty text and may only name agents of the scene."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("a prompt must be a non-empty text, e.g. 'behave as yourself'")
    for m in _AGENT_REF.finditer(normalize(text)):  # "agent three" names agent 3
        digits = m.group(1)
        k = int(digits) if len(digits) <= 9 else None  # longer ids name no agent of any scene
        if k is None or k >= n_agents:
            shown = digits if len(digits) <= 12 else digits[:12] + "..."
            raise ConfigError(f"prompt {_short(text)} names agent {shown}, which is not in the scene "
                              f"(agents 0..{n_agents - 1})")
    return text


def unread_parts(tokenizer, text: str) -> tuple[list[str], list[str]]:
    """(words never seen in training, odd characters) of a prompt, each in order of first
    appearance. A word tokenizer reads an unseen word as the unknown word, an n-gram tokenizer
    through its character n-grams only. Odd characters are those outside plain printable ASCII text and
    whitespace that do not belong to a word: the tokenizer skips them (or, like the Kelvin sign,
    reads them as another letter)."""
    from mirrorhall.imitation.tokenizer import words

    unknown = list(dict.fromkeys(w for w in words(text) if w not in tokenizer.index))
    odd = list(dict.fromkeys(c for c in str(text) if not c.isspace() and not (c.isascii() and c.isprintable())
                             and not re.fullmatch(r"\d", c)))
    return unknown, odd


def warn_unread(tokenizer, text: str, stacklevel: int = 2, quote: str | None = None) -> None:
    """An ``InputWarning`` (one line) naming the words of ``text`` the model does not know and the
    odd characters it holds; nothing when the model reads every word. ``quote``: the text the
    message quotes (default ``text``), e.g. a template whose placeholders ``text`` leaves out."""
    unknown, odd = unread_parts(tokenizer, text)
    if not unknown and not odd:
        return
    parts = []
    if unknown:
        shown = ", ".join(_short(w, 24) for w in unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        how = ("reads each only through its letter groups (n-grams)" if getattr(tokenizer, "buckets", 0)
               else "reads each as an unknown word")
        parts.append(f"the model does not know the word(s) {shown} (never seen in training) and {how}")
    if odd:
        shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in odd[:8]) + (f" and {len(odd) - 8} more" if len(odd) > 8 else "")
        parts.append(f"odd character(s) {shown} are skipped")
    quoted = _short(text if quote is None else quote)
    warnings.warn(f"prompt {quoted}: {'; '.join(parts)}", InputWarning, stacklevel=stacklevel + 1)


def encode_prompts(tokenizer, texts: Sequence[str], max_len: int, n_agents: int | None = None,
                   warn: bool = False) -> torch.Tensor:
    """(S, max_len) token ids, padded with 0, each distinct text encoded once; (S, max_len, W)
    with an n-gram tokenizer (a row of W ids per word, ``NgramTokenizer.encode``). With
    ``n_agents`` every text is first checked to name only agents of a scene of that size; with
    ``warn`` an ``InputWarning`` names the words of a text never seen in training (``warn_unread``)."""
    cache: dict[str, list] = {}
    width = () if tokenizer.width is None else (tokenizer.width,)
    out = np.zeros((len(texts), max_len, *width), dtype=np.int64)
    for s, text in enumerate(texts):
        ids = cache.get(text)
        if ids is None:
            if n_agents is not None:
                check_prompt(text, n_agents)
            if warn:
                warn_unread(tokenizer, text, stacklevel=3)
            ids = cache[text] = tokenizer.encode(text, max_len)
        if ids:
            out[s, : len(ids)] = ids
    return torch.from_numpy(out)


@torch.no_grad()
def encode_prompt_vectors(model, tokenizer, texts: Sequence[str], n_agents: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (S, L), prompt vectors (S, d)) of checked prompts, for acting: the vectors are
    computed once per prompt and passed to ``forward`` as ``prompt``."""
    tokens = encode_prompts(tokenizer, texts, model.config.max_prompt_len, n_agents=n_agents, warn=True)
    return tokens, model.prompt_vectors(tokens)


def check_compatible(model_config, world: WorldConfig) -> None:
    """The model can read this world: the same colours, no more agents than it has ids for."""
    if model_config.n_colors != world.n_colors:
        raise CheckpointError(f"the checkpoint reads worlds of {model_config.n_colors} colours, this scene has "
                              f"{world.n_colors}; use --colors {model_config.n_colors}")
    if world.n_agents > model_config.max_agents:
        raise CheckpointError(f"the checkpoint reads at most {model_config.max_agents} agents, the scene has "
                              f"{world.n_agents}")
    if model_config.place and tuple(model_config.place) != (world.height, world.width):
        h, w = model_config.place
        raise CheckpointError(f"the checkpoint reads places of a {h} x {w} grid (height x width), this scene is "
                              f"{world.height} x {world.width}; use --height {h} --width {w}")


# --- batch mode -----------------------------------------------------------------------------


def decayed_before(steps: int, decay: float, device=None) -> torch.Tensor:
    """(steps + 1, steps) weights of exclusive decayed running sums: entry [t, t'] is
    decay ** (t - 1 - t') for t' < t, else 0 (decay 1: a plain exclusive cumulative sum)."""
    t = torch.arange(steps + 1, device=device, dtype=torch.float32)[:, None]
    u = torch.arange(steps, device=device, dtype=torch.float32)[None]
    return torch.where(u < t, torch.tensor(decay, device=device).pow((t - 1 - u).clamp(min=0)), 0.0)


def memory_sums(model, terms: torch.Tensor) -> torch.Tensor:
    """Exclusive running memory rows over time: ``terms`` (E, T, ..., W) (``memory_terms`` of each
    step) -> (E, T + 1, ..., W), entry t holding steps 0..t-1, each column block decayed as
    ``memory_decay`` says (the step-by-step ``remember`` in one pass). One matmul over time with
    lower-triangular weights per decay, the all-time sum's among them (a strided cumsum and its
    backward cost several times more on CPU); in float32 even under autocast."""
    e, steps = terms.shape[:2]
    lead = terms.shape[2:-1]
    de, decay = model.config.d_evidence, model.config.decay
    r = len(decay)
    weights = torch.stack([decayed_before(steps, g, terms.device) for g in (1.0, *decay)])  # (1 + R, T + 1, T)
    blocks = terms[..., : de * (1 + r)].float().unflatten(-1, (1 + r, de)).movedim(-2, 1).flatten(3)  # (E, 1 + R, T, X)
    with torch.autocast(terms.device.type, enabled=False):
        sums = torch.matmul(weights, blocks).view(e, 1 + r, steps + 1, *lead, de).movedim(1, -2).flatten(-2)
        if not r:
            return sums
        count = terms[..., de * (1 + r):].float()  # (E, T, ..., R)
        cnt = torch.einsum("rtu,eu...r->et...r", weights[1:], count)
    return torch.cat([sums, cnt], dim=-1)


def pooled_evidence(model, feats: torch.Tensor, visible: torch.Tensor, actions: torch.Tensor,
                    full_view: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Exclusive running sums of evidence: memory rows (E, T + 1, Ni, Nj, memory_width) and counts
    (E, T + 1, Ni, Nj).

    ``feats`` (E, T + 1, Ni, Nj, 5, F), ``visible`` (E, T + 1, Ni, Nj), ``actions`` (E, T, Nj).
    Entry [e, t, i, j] sums the evidence of agent j's steps 0..t-1 that observer i saw (and its
    recency-weighted sums, ``MultiPolicyModel.memory_terms``). With ``full_view`` every observer
    sees the same features (up to the column evidence ignores), so each agent's evidence is
    computed once, from its own view, and masked per observer.
    """
    e, tp1, n = feats.shape[:3]
    seen = visible[:, :-1].to(feats.dtype)  # (E, T, Ni, Nj)
    if full_view:
        own = feats[:, :-1, torch.arange(n), torch.arange(n)]  # (E, T, Nj, 5, F)
        ev = model.evidence(own, actions)[:, :, None] * seen[..., None]  # (E, T, Ni, Nj, de)
    else:
        act = actions[:, :, None, :].expand(-1, -1, n, -1)  # (E, T, Ni, Nj)
        ev = model.evidence(feats[:, :-1], act) * seen[..., None]
    sums = memory_sums(model, model.memory_terms(ev, seen))
    counts = torch.cat([seen.new_zeros((e, 1, *seen.shape[2:])), seen.cumsum(1)], dim=1)
    return sums, counts


def gather_inputs(model, feats: torch.Tensor, visible: torch.Tensor, actions: torch.Tensor,
                  episode: torch.Tensor, t: torch.Tensor, agent: torch.Tensor, tokens: torch.Tensor,
                  situation: torch.Tensor | None = None, full_view: bool = False) -> dict[str, torch.Tensor]:
    """``forward``'s keyword arguments for samples (episode[s], t[s], agent[s]) of recorded
    histories (shapes as ``pooled_evidence``). ``situation[s]`` (default: the agent itself) puts
    the agent, with its memory, in another agent's current situation as it sees it."""
    sums, counts = pooled_evidence(model, feats, visible, actions, full_view)
    seat = agent if situation is None else situation
    return {
        "tokens": tokens,  # (S, L)
        "char_sum": sums[episode, t, agent],  # (S, N, memory_width)
        "char_count": counts[episode, t, agent],  # (S, N)
        "ego": agent,
        "entity_mask": visible[episode, t, agent],  # (S, N)
        "query": feats[episode, t, agent, seat],  # (S, 5, F)
    }


def batch_inputs(model, batch) -> dict[str, torch.Tensor]:
    """``forward``'s keyword arguments for every sample of a training batch
    (``mirrorhall.imitation.batches.Batch``) that holds the (Ni, Nj) table of what every observer
    sees: the general path, which ``batch_logits`` takes under partial view."""
    if batch.feats is None:
        raise ValueError("this batch holds only each agent's own features; build its episodes with pairs=True")
    return gather_inputs(model, batch.feats, batch.visible, batch.actions, batch.episode, batch.t, batch.agent,
                         batch.tokens, full_view=batch.full_view)


def batch_prompts(model, batch) -> torch.Tensor:
    """(S, d) prompt vectors of a batch, each distinct prompt of its table encoded once."""
    uniq, inverse = torch.unique(batch.prompt, return_inverse=True)
    tokens = trim_prompts(batch.table_tokens(uniq))
    with sdpa_kernel(SDPBackend.MATH):  # on CPU, for prompts this short, 1.5x the fused kernels under bf16
        return model.encode_prompts(tokens).index_select(0, inverse)


def batch_logits(model, batch) -> torch.Tensor:
    """(S, 5) logits of every sample of a training batch.

    Under full view every observer sees the same evidence and the same counts, so a character
    depends only on (episode, time, agent): evidence is pooled over (E, T + 1, N) (not
    (E, T + 1, Ni, Nj)), each character token is computed once for all samples at that (episode,
    time), and every distinct prompt is encoded once. The result equals ``model(**batch_inputs)``
    (tested); partial view takes that general path.
    """
    p = batch_prompts(model, batch)
    if not batch.full_view:
        x = batch_inputs(model, batch)
        chars = model.characters(x["char_sum"], x["char_count"])
        return model.decide(p, chars, x["ego"], x["entity_mask"], x["query"])
    own = batch.own  # (E, T + 1, N, 5, F)
    e, tp1, n = own.shape[:3]
    ev = model.evidence(own[:, :-1], batch.actions)  # (E, T, N, de)
    sums = memory_sums(model, model.memory_terms(ev, ev.new_ones(ev.shape[:-1])))  # (E, T + 1, N, memory_width)
    key = batch.episode * tp1 + batch.t
    uniq, inverse = torch.unique(key, return_inverse=True)
    t_u = uniq % tp1
    counts = t_u.to(own.dtype)[:, None].expand(-1, n)  # everyone has seen every step so far
    chars = model.characters(sums.flatten(0, 1).index_select(0, uniq), counts)  # (U, N, d)
    mask = torch.ones((len(inverse), n), dtype=torch.bool, device=chars.device)
    return model.decide(p, chars, batch.agent, mask, own[batch.episode, batch.t, batch.agent], rows=inverse)


# --- incremental mode -----------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """What driven agents remember of a scene: the summed evidence of every agent they have seen."""

    char_sum: torch.Tensor  # (..., N, memory_width): summed evidence, then recency's decayed sums
    char_count: torch.Tensor  # (..., N)

    @classmethod
    def empty(cls, model, lead: tuple[int, ...], n_agents: int) -> Memory:
        return cls(torch.zeros(*lead, n_agents, model.config.memory_width), torch.zeros(*lead, n_agents))


def remember(model, memory: Memory, feats: torch.Tensor, seen: torch.Tensor, actions: torch.Tensor) -> Memory:
    """Add one step: ``feats`` (..., N, 5, F) what each driven agent saw of every agent at that
    step, ``seen`` (..., N) float mask of the agents whose action it saw, ``actions`` (..., N).

    Under full observability every observer sees the same evidence: ``feats`` (B, N, 5, F) of any
    one observer then serves all of ``seen`` (B, M, N), and the evidence is computed once."""
    ev = model.evidence(feats, actions.clamp(min=0))  # (..., N, de)
    if ev.dim() < seen.dim() + 1:
        ev = ev.unsqueeze(-3)  # (B, 1, N, de), shared by the M observers
    terms = model.memory_terms(ev * seen[..., None], seen)
    if not model.config.recency:
        return Memory(memory.char_sum + terms, memory.char_count + seen)
    return Memory(memory.char_sum * model.memory_decay + terms, memory.char_count + seen)


def step_inputs(memory: Memory, feats: torch.Tensor, visible: torch.Tensor, ego: torch.Tensor,
                prompt: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """``forward``'s keyword arguments for S driven agents now: ``feats`` (S, N, 5, F) what each
    sees, ``visible`` (S, N), ``ego`` (S,), prompt vectors (S, d) and tokens (S, L)."""
    rows = torch.arange(ego.shape[0])
    return {"tokens": tokens, "char_sum": memory.char_sum, "char_count": memory.char_count, "ego": ego,
            "entity_mask": visible, "query": feats[rows, ego], "prompt": prompt}


def distribution(logits: torch.Tensor) -> np.ndarray:
    """(S, 5) float64 action probabilities from logits (softmax in double precision)."""
    return torch.softmax(logits.double(), dim=-1).numpy()


# --- acting from observations alone -----------------------------------------------------------


@dataclass(frozen=True)
class ActorState:
    """Per observation row (one agent of one world): its memory, and what it saw at the step
    before (its features of every agent and who was visible), whose actions it sees now."""

    memory: Memory  # (B, N, de), (B, N)
    feats: torch.Tensor  # (B, N, 5, F)
    visible: torch.Tensor  # (B, N) float
    looked: torch.Tensor
    """(B, N, C, H*W) with ``ModelConfig.perspective`` (nonzero: where the row's agent believes each
    agent last saw a gem of each colour, ``perception.view_look``), (B, 0) without."""
    gems: torch.Tensor
    """(B, C, H*W) with ``ModelConfig.pickups`` (nonzero: where the row's agent saw a gem of each
    colour at the step before, ``perception.view_gem_sightings``), (B, 0) without."""


class ObservationActor:
    """The model driving agents from nothing but each agent's own flat observation and a prompt.

    At step t an observation shows every visible agent's action of step t-1 (the agent table's
    last-action column), so ``act`` first adds the evidence of step t-1 (the features the agent
    saw then, the actions it sees now) and then computes the distribution of step t. Under full
    observability this is exactly ``ModelPolicy``'s computation; under partial observability one
    thing differs: an agent j visible at t-1 but out of view at t had its action of t-1 in no
    observation the ego has, so that step is left out of j's evidence.

    ``prompts`` gives each agent id its prompt (a text for all, or one per agent id).
    """

    def __init__(self, model, tokenizer, world: WorldConfig, prompts: str | Sequence[str] = DEFAULT_PROMPT):
        check_compatible(model.config, world)
        n = world.n_agents
        texts = [prompts] * n if isinstance(prompts, str) else list(prompts)
        if len(texts) != n:
            raise ConfigError(f"give one prompt per agent ({n}), got {len(texts)}")
        self.model = model
        self.world = world
        self.core = WorldCore(world)
        self.texts = texts
        self.tokens, self.prompt = encode_prompt_vectors(model, tokenizer, texts, n)  # (N, L), (N, d)

    def initial_state(self, batch_size: int) -> ActorState:
        n, f = self.world.n_agents, self.model.config.n_features
        cells = (self.world.n_colors, self.world.height * self.world.width)
        looked = (n, *cells) if self.model.config.perspective else (0,)
        gems = cells if self.model.config.pickups else (0,)
        return ActorState(Memory.empty(self.model, (batch_size,), n), torch.zeros(batch_size, n, 5, f),
                          torch.zeros(batch_size, n), torch.zeros(batch_size, *looked), torch.zeros(batch_size, *gems))

    @torch.no_grad()
    def act(self, obs: np.ndarray, state: ActorState | None = None) -> tuple[torch.Tensor, ActorState, View]:
        """(B, obs_dim) observations -> (log probabilities (B, 5) float64, next state, the decoded view)."""
        obs = np.asarray(obs)
        view = decode(obs, self.world)
        state = self.initial_state(obs.shape[0]) if state is None else state
        looked = None
        if self.model.config.perspective:  # an all-zero estimate is "nothing seen yet"
            looked = view_look(self.core, view, state.looked.numpy() > 0)  # (B, N, C, H*W)
        before = state.gems.numpy() > 0 if self.model.config.pickups else None  # all zero: nothing seen yet
        feats, visible = view_features(self.core, view, bool(self.model.config.place), looked,
                                       before)  # (B, N, 5, F), (B, N)
        feats_t = torch.from_numpy(feats)
        vis_t = torch.from_numpy(visible)
        act = torch.from_numpy(view.last_action)  # (B, N) actions of step t-1 of the agents visible now
        seen = state.visible * (act >= 0).float()  # seen at t-1, and its action seen at t
        memory = remember(self.model, state.memory, state.feats, seen, act)
        ego = torch.from_numpy(view.ego)
        logits = self.model(**step_inputs(memory, feats_t, vis_t, ego, self.prompt[ego], self.tokens[ego]))
        looked_t = state.looked if looked is None else torch.from_numpy(looked.astype(np.float32))
        gems_t = state.gems
        if self.model.config.pickups:
            gems_t = torch.from_numpy(view_gem_sightings(self.core, view).astype(np.float32))
        nxt = ActorState(memory, feats_t, vis_t.float(), looked_t, gems_t)
        return torch.log_softmax(logits.double(), dim=-1), nxt, view

    def probs(self, obs: np.ndarray, state: ActorState | None = None) -> tuple[np.ndarray, ActorState]:
        """(B, 5) action distributions and the next state; see ``act``."""
        logp, nxt, _ = self.act(obs, state)
        return logp.exp().numpy(), nxt
