"""The Bayes observer: exact posteriors over personas from observed (situation, action) pairs.

For a finite hypothesis set H with prior P(h), after pairs (s_t, a_t) of a target,
``log P(h|D) = log P(h) + sum_t log pi_h(a_t|s_t) + const`` and the posterior predictive in any
situation s is ``q*(a|s) = sum_h P(h|D) pi_h(a|s)``. For Dirichlet species the predictive has the
closed form ``(n_a + alpha) / (n + 5 alpha)``, marginalised over the species' alphas.

Everything is vectorised over leading axes (targets, worlds, observers) and over hypotheses.
Persona families (``agents/families.py``) have their own observer, ``FamilyObserver``, which also
tracks the state each hypothesis would give the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mirrorhall.agents.families import (
    FAMILY_CODE,
    FamilyParams,
    FamilyState,
    family_grid,
    family_probs,
    look,
)
from mirrorhall.agents.personas import (
    GEM_WEIGHT,
    LIKES_NONE,
    SOCIAL_WEIGHT,
    SOCIALS,
    STYLES,
    Believer,
    Memoryless,
    Trait,
)
from mirrorhall.envs import perception
from mirrorhall.envs.core import COLOR_NAMES, N_ACTIONS, WorldConfig, WorldCore, WorldState
from mirrorhall.envs.perception import (
    Situations,
    pickups,
    remember,
    remembered_gem_d,
    seen_gem_cells,
    sightings,
    situations,
)

# --- trait utilities, shared by personas and hypotheses --------------------------------------



def log_prior(prior, n: int) -> np.ndarray:
    """(n,) log weights of a prior over n hypotheses (None: uniform); refused unless it is one
    non-negative weight per hypothesis summing to 1. A zero weight is -inf."""
    prior = np.full(n, 1.0 / n) if prior is None else np.asarray(prior, float)
    if prior.shape != (n,) or np.any(prior < 0) or not np.isclose(prior.sum(), 1):
        raise ValueError("prior must be one non-negative weight per hypothesis, summing to 1")
    with np.errstate(divide="ignore"):
        return np.log(prior)

def gem_basis(sit: Situations) -> np.ndarray:
    """(S..., C + 1, 5): the gem term of U for likes = colour c, and (last row) likes none."""
    d = sit.gem_d  # (S..., 5, C)
    c = d.shape[-1]
    out = np.zeros((*d.shape[:-2], c + 1, d.shape[-2]))  # the likes-none row stays +0.0
    np.multiply(-GEM_WEIGHT, np.where(sit.gem_seen[..., None, :], d, 0.0),
                out=np.swapaxes(out[..., :c, :], -1, -2))  # written through a (S..., 5, C) view
    return out


def social_basis(sit: Situations) -> np.ndarray:
    """(S..., 3 + N, 5): social terms none, approach, avoid, then follow agent j for each j."""
    return np.concatenate([social_fixed(sit), follow_rows(sit.agent_d, sit.agent_seen)], axis=-2)


def social_fixed(sit: Situations) -> np.ndarray:
    """(S..., 3, 5): the first three rows of ``social_basis`` (none, approach, avoid)."""
    near = sit.agent_near
    return np.stack([np.zeros_like(near), -SOCIAL_WEIGHT * near, SOCIAL_WEIGHT * near], axis=-2)


def follow_rows(agent_d: np.ndarray, agent_seen: np.ndarray) -> np.ndarray:
    """(S..., N, 5) the follow rows of ``social_basis``: -SOCIAL_WEIGHT x the distance to agent j
    after each move where j is seen, 0 where not; agent_d (S..., 5, N), agent_seen (S..., N)."""
    return np.swapaxes(-SOCIAL_WEIGHT * np.where(agent_seen[..., None, :], agent_d, 0.0), -1, -2)


class TraitBases:
    """The utility bases of one ``Situations``, computed once and shared by every query on it.

    ``gem`` is ``gem_basis(sit)`` and ``fixed`` the first three rows of ``social_basis(sit)``;
    follow rows are computed only for the (situation, followed agent) pairs asked for. Every
    value is produced by the same float operations as the full bases, so results are
    bit-identical. Functions that take ``Situations | TraitBases`` compute them when given
    situations; a caller that asks several questions of one ``Situations`` builds them once and
    passes them (``Cast`` does so through its ``BasesMemo``). An instance keeps the situations'
    ``agent_d`` getter (which computes it only if a follow row is asked for) and ``agent_seen``
    array (and, after ``take``, the index into them) but not the situations object itself.
    """

    def __init__(self, sit: Situations):
        self.gem = gem_basis(sit)  # (S..., C + 1, 5)
        self.fixed = social_fixed(sit)  # (S..., 3, 5)
        self._agents = (sit.agent_d_getter(), sit.agent_seen)  # what follow rows are computed from
        self._index = ()  # indices into self._agents, applied in order when follow rows are needed

    def take(self, index) -> TraitBases:
        """The bases of ``sit.take(index)``, by indexing instead of recomputing."""
        sub = TraitBases.__new__(TraitBases)
        sub.gem, sub.fixed = self.gem[index], self.fixed[index]
        sub._agents, sub._index = self._agents, (*self._index, index)
        return sub

    def _agent_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(agent_d (S..., 5, N), agent_seen (S..., N)) of these situations."""
        get_agent_d, agent_seen = self._agents
        agent_d = get_agent_d()
        for index in self._index:
            agent_d, agent_seen = agent_d[index], agent_seen[index]
        return agent_d, agent_seen

    def social_full(self) -> np.ndarray:
        """(S..., 3 + N, 5) ``social_basis(sit)``, built on each call (only follow hypotheses)."""
        return np.concatenate([self.fixed, follow_rows(*self._agent_arrays())], axis=-2)

    def utility(self, likes: np.ndarray, social: np.ndarray) -> np.ndarray:
        """(S..., 5) U = gem row ``likes`` + social row ``social``, element by element.

        ``likes`` and ``social`` have the leading shape S of the situations.
        """
        lead = self.gem.shape[:-2]
        if likes.shape != lead or social.shape != lead:  # broadcasting: the full bases
            return (np.take_along_axis(self.gem, likes[..., None, None], axis=-2)[..., 0, :]
                    + np.take_along_axis(self.social_full(), social[..., None, None], axis=-2)[..., 0, :])
        p = int(np.prod(lead, dtype=np.int64))
        rows = np.arange(p)
        gem = self.gem.reshape(p, *self.gem.shape[-2:])[rows, likes.reshape(-1)]  # (P, 5)
        so = social.reshape(-1)
        soc = self.fixed.reshape(p, 3, N_ACTIONS)[rows, np.minimum(so, 2)]  # (P, 5)
        fol = np.flatnonzero(so >= 3)
        if fol.size:  # follow agent k: only the row asked for, for each such persona
            agent_d, agent_seen = self._agent_arrays()
            k = so[fol] - 3
            n = agent_seen.shape[-1]
            seen = agent_seen.reshape(p, n)[fol, k]  # (F,)
            d = agent_d.reshape(p, N_ACTIONS, n)[fol, :, k]  # (F, 5)
            soc[fol] = follow_rows(d[:, :, None], seen[:, None])[:, 0]
        return (gem + soc).reshape(*lead, N_ACTIONS)


class BasesMemo:
    """The ``TraitBases`` of the situations asked about last, built once for all their questions.

    One step asks several questions of one ``Situations`` (every agent's probabilities, the
    probabilities as another agent, the imitators' update); ``memo(sit)`` builds the bases on the
    first and returns the same object while ``sit`` is the situations asked about. Situations are
    values, never changed once built, so the object itself is the key. A pickled memo travels
    empty.
    """

    def __init__(self) -> None:
        self._sit: Situations | None = None
        self._bases: TraitBases | None = None

    def __call__(self, sit: Situations) -> TraitBases:
        if sit is not self._sit:
            self._sit, self._bases = sit, TraitBases(sit)
        return self._bases

    def __getstate__(self) -> dict:  # the bases hold a function, and are only worth keeping here
        return {"_sit": None, "_bases": None}


def trait_codes(trait: Trait, n_colors: int, n_agents: int) -> tuple[int, int, float]:
    """(likes index into gem_basis, social index into social_basis, beta) for a scene."""
    colors = COLOR_NAMES[:n_colors]
    if trait.likes != LIKES_NONE and trait.likes not in colors:
        raise ValueError(
            f"likes: unknown colour {trait.likes!r} for a world with {n_colors} colours; "
            f"allowed: {', '.join((*colors, LIKES_NONE))}"
        )
    likes = n_colors if trait.likes == LIKES_NONE else colors.index(trait.likes)
    if trait.social == "follow":
        if trait.follow >= n_agents:
            raise ValueError(f"follow: agent {trait.follow} does not exist (agents 0..{n_agents - 1})")
        social = 3 + trait.follow
    else:
        social = SOCIALS.index(trait.social)
    return likes, social, trait.beta


_FAST_SIZE = 1024
"""Arrays of at least this many elements over the 5 actions take the unrolled path below."""


def _max5(x: np.ndarray) -> np.ndarray:
    """(...) maximum over a last axis of 5 (exact in any order)."""
    return np.maximum(np.maximum(np.maximum(x[..., 0], x[..., 1]), np.maximum(x[..., 2], x[..., 3])),
                      x[..., 4])


def _sum5(e: np.ndarray) -> np.ndarray:
    """(...) ``e.sum(-1)`` over a last axis of 5, added left to right exactly as numpy's
    reduction adds fewer than 8 elements (checked bit for bit in tests/test_bayes.py)."""
    s = e[..., 0] + e[..., 1]
    s += e[..., 2]
    s += e[..., 3]
    s += e[..., 4]
    return s


def softmax(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] == N_ACTIONS and x.size >= _FAST_SIZE:  # numpy reduces short axes slowly
        e = np.exp(x - _max5(x)[..., None])
        e /= _sum5(e)[..., None]
        return e
    z = x - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] == N_ACTIONS and x.size >= _FAST_SIZE:
        z = x - _max5(x)[..., None]
        return z - np.log(_sum5(np.exp(z)))[..., None]
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# --- hypothesis sets -----------------------------------------------------------------------------


def _product_grid(likes: np.ndarray, social: np.ndarray, beta: np.ndarray):
    """(likes (L,), social (K,), beta (S,)) when hypothesis h is the h-th element of their
    product in likes-major order (what ``HypothesisSet.grid`` builds); None otherwise."""
    def firsts(x):
        _, at = np.unique(x, return_index=True)
        return x[np.sort(at)]
    lk, so, be = firsts(likes), firsts(social), firsts(beta)
    if lk.size * so.size * be.size != likes.size:
        return None
    grid = np.meshgrid(lk, so, be, indexing="ij")
    if not all(np.array_equal(g.reshape(-1), x) for g, x in zip(grid, (likes, social, beta), strict=True)):
        return None
    return lk, so, be


class HypothesisSet:
    """A finite set of trait personas with a prior, evaluated in any situations at once."""

    def __init__(self, traits: Sequence[Trait], n_colors: int, n_agents: int, prior=None):
        if len(traits) == 0:
            raise ValueError("a hypothesis set needs at least one trait persona")
        self.traits = tuple(traits)
        codes = np.array([trait_codes(t, n_colors, n_agents) for t in self.traits])
        self.likes = codes[:, 0].astype(np.int64)  # (H,)
        self.social = codes[:, 1].astype(np.int64)  # (H,)
        self.beta = codes[:, 2]  # (H,)
        prior = np.full(len(traits), 1.0 / len(traits)) if prior is None else np.asarray(prior, float)
        if prior.shape != (len(traits),) or np.any(prior < 0) or not np.isclose(prior.sum(), 1):
            raise ValueError("prior must be one non-negative weight per hypothesis, summing to 1")
        self.log_prior = np.log(np.maximum(prior, 1e-300))
        self.n_colors, self.n_agents = n_colors, n_agents
        self._fixed_social = bool(np.all(self.social < 3))  # no follow hypotheses
        self._grid = _product_grid(self.likes, self.social, self.beta) if self._fixed_social else None

    def __len__(self) -> int:
        return len(self.traits)

    @classmethod
    def grid(cls, n_colors: int, n_agents: int, likes=None, socials=("none", "approach", "avoid"),
             styles=tuple(STYLES)) -> HypothesisSet:
        """Every combination of the given trait values (likes defaults to every colour + none)."""
        likes = (*COLOR_NAMES[:n_colors], LIKES_NONE) if likes is None else tuple(likes)
        traits = [Trait(lk, so, st) for lk in likes for so in socials for st in styles]
        return cls(traits, n_colors, n_agents)

    def index(self, trait: Trait) -> int:
        return self.traits.index(trait)

    def utilities(self, sit: Situations | TraitBases) -> np.ndarray:
        """(S..., H, 5) beta_h * U_h(s, a); ``sit`` may be precomputed ``TraitBases``."""
        tb = sit if isinstance(sit, TraitBases) else TraitBases(sit)
        if self._grid is not None:  # likes x social x style: each U once, times every beta
            likes, social, beta = self._grid
            gem, soc = tb.gem[..., likes, :], tb.fixed[..., social, :]  # (S..., L, 5), (S..., K, 5)
            u = gem[..., :, None, None, :] + soc[..., None, :, None, :]  # (S..., L, K, 1, 5)
            return (beta[:, None] * u).reshape(*u.shape[:-4], len(self), N_ACTIONS)
        social = tb.fixed if self._fixed_social else tb.social_full()
        u = tb.gem[..., self.likes, :] + social[..., self.social, :]
        return self.beta[:, None] * u

    def probs(self, sit: Situations | TraitBases) -> np.ndarray:
        """(S..., H, 5) exact pi_h(a|s) for every hypothesis."""
        return softmax(self.utilities(sit))

    def log_probs(self, sit: Situations | TraitBases) -> np.ndarray:
        return log_softmax(self.utilities(sit))


class BayesObserver:
    """Posterior over a hypothesis set from observed (situation, action) pairs."""

    def __init__(self, hypotheses: HypothesisSet):
        self.hypotheses = hypotheses

    def prior(self, shape: tuple[int, ...] = ()) -> np.ndarray:
        """(shape..., H) unnormalised log posterior before any observation."""
        return np.broadcast_to(self.hypotheses.log_prior, (*shape, len(self.hypotheses))).copy()

    def update(self, log_post: np.ndarray, sit: Situations, actions: np.ndarray, mask=None) -> np.ndarray:
        """Add one observed step: sit with leading shape (shape...), actions (shape...)."""
        ll = self.hypotheses.log_probs(sit)  # (shape..., H, 5)
        a = np.asarray(actions, dtype=np.int64)
        step = np.take_along_axis(ll, a[..., None, None], axis=-1)[..., 0]  # (shape..., H)
        if mask is not None:
            step = np.where(np.asarray(mask)[..., None], step, 0.0)
        return log_post + step

    def fit(self, sits: Situations, actions: np.ndarray, mask=None) -> np.ndarray:
        """Log posterior after T steps; sits and actions have leading shape (T, shape...)."""
        ll = self.hypotheses.log_probs(sits)  # (T, shape..., H, 5)
        a = np.asarray(actions, dtype=np.int64)
        step = np.take_along_axis(ll, a[..., None, None], axis=-1)[..., 0]  # (T, shape..., H)
        if mask is not None:
            step = np.where(np.asarray(mask)[..., None], step, 0.0)
        return self.hypotheses.log_prior + step.sum(0)

    @staticmethod
    def posterior(log_post: np.ndarray) -> np.ndarray:
        """Normalised posterior (shape..., H)."""
        return softmax(log_post)

    @staticmethod
    def log_evidence(log_post: np.ndarray) -> np.ndarray:
        """(shape...) log P(D): the unnormalised log posterior summed over hypotheses."""
        m = log_post.max(-1)
        return m + np.log(np.exp(log_post - m[..., None]).sum(-1))

    def predictive(self, log_post: np.ndarray, sit: Situations) -> np.ndarray:
        """(shape..., 5) posterior predictive sum_h P(h|D) pi_h(a|s) in situations ``sit``."""
        return np.einsum("...h,...ha->...a", self.posterior(log_post), self.hypotheses.probs(sit))


# --- Dirichlet species: closed form ------------------------------------------------------------


def _log_rising(n: np.ndarray, x: float) -> np.ndarray:
    """log(x (x+1) ... (x+n-1)) = lgamma(x + n) - lgamma(x), elementwise for integers n >= 0."""
    n = np.asarray(n, dtype=np.int64)
    top = int(n.max()) if n.size else 0
    table = np.concatenate([[0.0], np.cumsum(np.log(x + np.arange(top)))])  # (top + 1,)
    return table[n]


def dirichlet_log_marginal(counts: np.ndarray, alpha: float) -> np.ndarray:
    """(...,) log P(a particular sequence with these action counts | Dirichlet(alpha) agent)."""
    counts = np.asarray(counts, dtype=np.int64)
    n = counts.sum(-1)
    a = float(alpha)
    num = _log_rising(counts, a).sum(-1)
    den = _log_rising(n, N_ACTIONS * a)
    return num - den


def dirichlet_log_evidence(counts: np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """(...,) log P(a particular sequence with these action counts) for a random agent whose
    alpha is uniform over ``alphas``."""
    logm = np.stack([dirichlet_log_marginal(counts, a) for a in alphas], axis=-1) - np.log(len(alphas))
    return BayesObserver.log_evidence(logm)


def dirichlet_predictive(counts: np.ndarray, alphas: Sequence[float], weights=None) -> np.ndarray:
    """(..., 5) exact predictive after observing action counts (..., 5) of a random agent.

    The agent's alpha is drawn from ``alphas`` with prior ``weights`` (uniform by default), its
    action distribution from Dirichlet(alpha); the alpha posterior uses the exact marginals.
    """
    counts = np.asarray(counts, dtype=np.int64)
    alphas = np.asarray(alphas, dtype=np.float64)
    w = np.full(alphas.shape, 1.0 / alphas.size) if weights is None else np.asarray(weights, float)
    logm = np.stack([dirichlet_log_marginal(counts, a) for a in alphas], axis=-1)  # (..., A)
    with np.errstate(divide="ignore"):  # a zero prior weight is allowed: log 0 = -inf
        post = softmax(logm + np.log(w))  # (..., A)
    n = counts.sum(-1, keepdims=True)[..., None]  # (..., 1, 1)
    pred = (counts[..., None, :] + alphas[:, None]) / (n + N_ACTIONS * alphas[:, None])  # (..., A, 5)
    return np.einsum("...k,...ka->...a", post, pred)


# --- imitators: Bayes over (own trait, fidelity) --------------------------------------------------


class ImitatorObserver:
    """Posterior over an imitator's own trait h' and fidelity f, and its predictive.

    The imitator of target k acts with ``f * sum_h b_t(h) pi_h(a|s) + (1 - f) * pi_h'(a|s)``,
    where b_t is the Bayes posterior about k from k's pairs before t (what ``Cast`` imitators
    keep). An observer who sees what the imitator saw can compute b_t exactly; the unknowns are h'
    (uniform over ``own``) and f (uniform over the grid ``fidelities``, standing in for the
    population's uniform range).
    """

    def __init__(self, belief: HypothesisSet, own: HypothesisSet,
                 fidelities=(0.6, 0.7, 0.8, 0.9, 1.0)):
        self.belief, self.own = belief, own
        self.f = np.asarray(fidelities, dtype=np.float64)  # (F,)

    def components(self, log_belief: np.ndarray, sit: Situations) -> tuple[np.ndarray, np.ndarray]:
        """(imitation (S, 5), own (S, H', 5)) action distributions in situations ``sit`` (S,)."""
        tb = TraitBases(sit)  # one set of bases for both hypothesis sets
        imitation = np.einsum("sh,sha->sa", softmax(log_belief), self.belief.probs(tb))
        return imitation, self.own.probs(tb)

    def mixture(self, imitation: np.ndarray, own: np.ndarray) -> np.ndarray:
        """(S, H', F, 5) the imitator's distribution for every (h', f)."""
        f = self.f[None, None, :, None]
        return f * imitation[:, None, None, :] + (1 - f) * own[:, :, None, :]

    def log_likelihood(self, target_sits: list[Situations], target_actions: np.ndarray,
                       imitator_sits: list[Situations], imitator_actions: np.ndarray) -> np.ndarray:
        """(T + 1, S, H', F) log-likelihood of the imitator's first t actions, for t = 0..T.

        ``*_sits[t]`` have leading shape (S,); actions are (T, S).
        """
        steps = imitator_actions.shape[0]
        s = imitator_actions.shape[1]
        observer = BayesObserver(self.belief)
        log_belief = observer.prior((s,))
        out = np.zeros((steps + 1, s, len(self.own), self.f.size))
        for t in range(steps):
            imitation, own = self.components(log_belief, imitator_sits[t])
            p = self.mixture(imitation, own)  # (S, H', F, 5)
            a = imitator_actions[t]
            out[t + 1] = out[t] + np.log(np.take_along_axis(p, a[:, None, None, None], axis=-1)[..., 0])
            log_belief = observer.update(log_belief, target_sits[t], target_actions[t])
        return out

    def predictive(self, log_lik: np.ndarray, log_belief: np.ndarray, sit: Situations) -> np.ndarray:
        """(S, 5) the imitator's next action in situations ``sit``, given (S, H', F) log-likelihoods
        and the imitator's current (S, H) log belief about its target."""
        post = softmax(log_lik.reshape(log_lik.shape[0], -1)).reshape(log_lik.shape)
        return np.einsum("shf,shfa->sa", post, self.mixture(*self.components(log_belief, sit)))

    @staticmethod
    def log_evidence(log_lik: np.ndarray) -> np.ndarray:
        """(..., ) log marginal likelihood: log mean over the uniform (h', f) prior."""
        flat = log_lik.reshape(*log_lik.shape[:-2], -1)
        m = flat.max(-1, keepdims=True)
        return (m[..., 0] + np.log(np.exp(flat - m).mean(-1)))


# --- believers: Bayes over persona hypotheses, tracking the subject's memory from its view ---------


def believed_gem_term(config: WorldConfig, memory: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(P..., C, 5) the gem term of a believer liking colour c: ``-GEM_WEIGHT * d(nearest cell its
    memory (P..., C, H*W) places a gem of c, after each move from ``after`` (P..., 5))``, 0 where it
    believes in none."""
    gem_d, believed = remembered_gem_d(config, memory, after)  # (P..., 5, C), (P..., C)
    return np.swapaxes(np.where(believed[..., None, :], -GEM_WEIGHT * gem_d, 0.0), -1, -2)


def believer_probs(config: WorldConfig, tb: TraitBases, likes: np.ndarray, social: np.ndarray, beta: np.ndarray,
                   memory: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(P..., 5) believers with trait codes (likes, social, beta) (P...) (social none, approach or
    avoid), memories (P..., C, H*W) and post-move cells (P..., 5), in situations whose bases are
    ``tb`` (for the social term): ``softmax(beta * (believed gem term + social term))``."""
    gem = believed_gem_term(config, memory, after)  # (P..., C, 5)
    likes = np.asarray(likes)
    row = np.take_along_axis(gem, likes[..., None, None], axis=-2)[..., 0, :]  # (P..., 5)
    soc = np.take_along_axis(tb.fixed, np.asarray(social)[..., None, None], axis=-2)[..., 0, :]  # (P..., 5)
    return softmax(np.asarray(beta)[..., None] * (row + soc))


def track_memory(core: WorldCore, states, agents, memory: np.ndarray | None = None) -> list[np.ndarray]:
    """Memories of ``agents`` (B,) (one agent per world) after looking at each of ``states`` in turn:
    a list of (B, C, H*W), entry t what the agent believes when it acts at step t. This is the
    observer's side of belief tracking: from the geometry of the subject's view alone."""
    agents = np.asarray(agents, dtype=np.int64)
    out = []
    for st in states:
        cell_seen, gem_here = sightings(core, st)  # (B, N, H*W), (B, C, H*W)
        rows = np.arange(agents.size)
        now = remember(None if memory is None else memory[:, None], cell_seen[rows, agents][:, None], gem_here)
        memory = now[:, 0]
        out.append(memory)
    return out


class BeliefHypotheses:
    """A finite set of ``Believer`` and ``Memoryless`` personas with a prior, evaluated exactly in
    any situations given the subject's memory (what a believer hypothesis acts on)."""

    def __init__(self, specs, config: WorldConfig, prior=None):
        specs = tuple(specs)
        if not specs or not all(isinstance(s, (Believer, Memoryless)) for s in specs):
            raise ValueError("a belief hypothesis set needs Believer and Memoryless personas only")
        self.specs, self.config = specs, config
        codes = np.array([trait_codes(s.trait, config.n_colors, config.n_agents) for s in specs])
        self.likes = codes[:, 0].astype(np.int64)  # (H,)
        self.social = codes[:, 1].astype(np.int64)  # (H,)
        self.beta = codes[:, 2]  # (H,)
        self.believer = np.array([isinstance(s, Believer) for s in specs])  # (H,)
        self.log_prior = log_prior(prior, len(specs))

    def __len__(self) -> int:
        return len(self.specs)

    @classmethod
    def grid(cls, config: WorldConfig, families=("believer", "memoryless"), likes=None,
             socials=("none",), styles=tuple(STYLES), prior=None) -> BeliefHypotheses:
        """Every combination of family x liked colour x social term x style."""
        cls_of = {"believer": Believer, "memoryless": Memoryless}
        likes = config.color_names if likes is None else tuple(likes)
        specs = [cls_of[f](lk, so, st) for f in families for lk in likes for so in socials for st in styles]
        return cls(specs, config, prior)

    def utilities(self, sit: Situations | TraitBases, memory: np.ndarray, after: np.ndarray) -> np.ndarray:
        """(S..., H, 5) beta_h * U_h: believers read ``memory`` (S..., C, H*W) from the post-move
        cells ``after`` (S..., 5); memoryless personas read the situations."""
        tb = sit if isinstance(sit, TraitBases) else TraitBases(sit)
        soc = tb.fixed[..., self.social, :]  # (S..., H, 5)
        seen_now = tb.gem[..., self.likes, :]  # (S..., H, 5)
        believed = believed_gem_term(self.config, memory, after)[..., self.likes, :]  # (S..., H, 5)
        u = np.where(self.believer[:, None], believed, seen_now) + soc
        return self.beta[:, None] * u

    def probs(self, sit, memory, after) -> np.ndarray:
        return softmax(self.utilities(sit, memory, after))

    def log_probs(self, sit, memory, after) -> np.ndarray:
        return log_softmax(self.utilities(sit, memory, after))


class BeliefObserver:
    """The exact Bayes observer of a subject that may act on memory.

    It tracks the subject's memory from the geometry of the subject's view (``track_memory``: the
    cells within ``view_radius`` of the subject at each step) and keeps a posterior over
    ``BeliefHypotheses`` from the subject's observed (situation, memory, action) triples; its
    predictive is ``sum_h P(h|D) pi_h(a | s, memory)``."""

    def __init__(self, hypotheses: BeliefHypotheses):
        self.hypotheses = hypotheses

    def prior(self, shape: tuple[int, ...] = ()) -> np.ndarray:
        return np.broadcast_to(self.hypotheses.log_prior, (*shape, len(self.hypotheses))).copy()

    def update(self, log_post, sit, memory, after, actions, mask=None) -> np.ndarray:
        ll = self.hypotheses.log_probs(sit, memory, after)  # (S..., H, 5)
        a = np.asarray(actions, dtype=np.int64)
        step = np.take_along_axis(ll, a[..., None, None], axis=-1)[..., 0]
        if mask is not None:
            step = np.where(np.asarray(mask)[..., None], step, 0.0)
        return log_post + step

    def predictive(self, log_post, sit, memory, after) -> np.ndarray:
        """(S..., 5) the posterior predictive."""
        return np.einsum("...h,...ha->...a", softmax(log_post), self.hypotheses.probs(sit, memory, after))


def post_move_cells(core: WorldCore, state: WorldState, agents) -> np.ndarray:
    """(B, 5) flat cell of agent ``agents[b]`` of world b after each move."""
    agents = np.asarray(agents, dtype=np.int64)
    pos = state.agent_pos[np.arange(agents.size), agents]  # (B, 2)
    return core.move_cell[core.cells(pos)]


# --- persona families: Bayes over a family's parameter grid, tracking each hypothesis's state -----


class FamilyHypotheses:
    """A finite set of family personas (``agents/families.py``; one family or several) with a
    prior, for a target that plays agent ``agent`` of a world."""

    def __init__(self, specs, config: WorldConfig, agent: int, prior=None):
        specs = tuple(specs)
        if not specs or not all(s.kind in FAMILY_CODE for s in specs):
            raise ValueError(f"a family hypothesis set needs family personas only ({', '.join(FAMILY_CODE)})")
        self.specs, self.config, self.agent = specs, config, int(agent)
        self.params = FamilyParams.build(specs, config, agents=[self.agent] * len(specs))  # (H,)
        self.log_prior = log_prior(prior, len(specs))

    def __len__(self) -> int:
        return len(self.specs)

    @classmethod
    def grid(cls, family: str, config: WorldConfig, agent: int) -> FamilyHypotheses:
        """The family's parameter grid (``families.family_grid``), uniform prior."""
        return cls(family_grid(family, config, agent), config, agent)

    def index(self, spec) -> int:
        return self.specs.index(spec)


@dataclass
class FamilyBelief:
    """What a family observer knows of its target in B worlds: the log posterior over the
    hypotheses, the target's state under each hypothesis (reconstructed from what it has seen), and
    the gems at its last look (to tell what the target collected)."""

    log_post: np.ndarray  # (B, H) unnormalised
    state: FamilyState  # (B, H) phase and recent cells under each hypothesis
    gems_before: np.ndarray | None = None  # (B, G, 2)


def situation_of(core: WorldCore, world: WorldState, agents) -> tuple[Situations, np.ndarray, np.ndarray]:
    """(situations (B,), post-move cells (B, 5), gem cells seen (B, G)) of agent ``agents[b]`` of
    world b: what a family persona reads in that agent's situation."""
    agents = np.asarray(agents, dtype=np.int64)
    rows = np.arange(agents.size)
    return (situations(core, world).take((rows, agents)), perception.post_move_cells(core, world)[rows, agents],
            seen_gem_cells(core, world)[rows, agents])


class FamilyObserver:
    """The exact Bayes observer of a family persona.

    Every hypothesis h of the set carries the state the target would have if it were h (which
    waypoint is next, which colour it wants, the cells it stood on): the observer rebuilds it from
    what it sees, exactly as the persona does (``families.look`` on the target's cell and its
    pickups, ``perception.pickups``). ``look`` at every step, then ``update`` with the target's
    action; the posterior predictive in any situation is ``sum_h P(h|D) pi_h(a | s, state_h)``.

    Exact when the observer sees every agent and gem at every step from the first (full view),
    as the probes run it; the pickups of a target it loses from sight are not known to it.
    """

    def __init__(self, hypotheses: FamilyHypotheses):
        self.hypotheses = hypotheses
        self.config = hypotheses.config

    def _params(self, b: int) -> FamilyParams:
        return self.hypotheses.params[np.broadcast_to(np.arange(len(self.hypotheses)), (b, len(self.hypotheses)))]

    def prior(self, b: int) -> FamilyBelief:
        """Before anything is seen, in B worlds."""
        h = len(self.hypotheses)
        return FamilyBelief(np.broadcast_to(self.hypotheses.log_prior, (b, h)).copy(),
                            FamilyState.initial((b, h), self.hypotheses.params.max_memory))

    def look(self, belief: FamilyBelief, core: WorldCore, world: WorldState) -> FamilyBelief:
        """The target (agent ``hypotheses.agent`` of every world) looks at ``world`` before it acts:
        each hypothesis's state takes in its cell and what it collected in the step just taken."""
        k = self.hypotheses.agent
        b = world.batch_size
        cell = core.cells(world.agent_pos[:, k])  # (B,)
        picked = None
        if belief.gems_before is not None:
            picked = pickups(core, belief.gems_before, world.agent_pos, world.t - 1)[:, k, None]  # (B, 1)
        state = look(self._params(b), belief.state, cell[:, None], picked)
        return FamilyBelief(belief.log_post, state, world.gem_pos.copy())

    def probs(self, belief: FamilyBelief, sit: Situations, after: np.ndarray, gem_cell: np.ndarray) -> np.ndarray:
        """(B, H, 5) every hypothesis, with its state, in situations ``sit`` (B,) with post-move
        cells ``after`` (B, 5) and gem sightings ``gem_cell`` (B, G) (``situation_of``)."""
        b, h = belief.log_post.shape
        rows = np.broadcast_to(np.arange(b)[:, None], (b, h))
        return family_probs(self._params(b), belief.state, sit.take(rows), after[rows], gem_cell[rows], self.config)

    def update(self, belief: FamilyBelief, sit, after, gem_cell, actions, mask=None) -> FamilyBelief:
        """Add the target's action ``actions`` (B,) taken in its own situation (``situation_of``)."""
        p = self.probs(belief, sit, after, gem_cell)  # (B, H, 5)
        a = np.asarray(actions, dtype=np.int64)
        step = np.log(np.maximum(np.take_along_axis(p, a[:, None, None], axis=-1)[..., 0], 1e-300))  # (B, H)
        if mask is not None:
            step = np.where(np.asarray(mask)[:, None], step, 0.0)
        return FamilyBelief(belief.log_post + step, belief.state, belief.gems_before)

    def predictive(self, belief: FamilyBelief, sit, after, gem_cell, prior: bool = False) -> np.ndarray:
        """(B, 5) the posterior predictive in situations ``sit`` (B,); ``prior``: the prior
        predictive (the states tracked, no action weighed)."""
        log_post = np.broadcast_to(self.hypotheses.log_prior, belief.log_post.shape) if prior else belief.log_post
        return np.einsum("bh,bha->ba", softmax(log_post), self.probs(belief, sit, after, gem_cell))
