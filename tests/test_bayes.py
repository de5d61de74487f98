"""The Bayes observer: closed forms against brute force, trait posteriors against enumeration with
a plain per-agent reference, and how fast the posterior finds the truth in real scenes."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from mirrorhall.agents.bayes import (
    BayesObserver,
    HypothesisSet,
    TraitBases,
    dirichlet_log_marginal,
    dirichlet_predictive,
)
from mirrorhall.agents.cast import Cast, sample_actions
from mirrorhall.agents.personas import GEM_WEIGHT, SOCIAL_WEIGHT, Trait
from mirrorhall.agents.populations import get_population
from mirrorhall.envs.core import MOVES, WorldConfig, WorldCore, WorldState, split_observation
from mirrorhall.envs.perception import Situations, situations

# --- Dirichlet species: closed forms vs brute force -----------------------------------------------

COUNTS = [(0, 0, 0, 0, 0), (1, 0, 0, 0, 0), (2, 1, 0, 0, 0), (0, 3, 0, 1, 0), (1, 1, 1, 1, 1)]


@pytest.mark.parametrize("alpha", [0.3, 1.0, 3.0])
def test_dirichlet_predictive_equals_monte_carlo_integration(alpha):
    """predictive(a) = E[p_a prod_b p_b^n_b] / E[prod_b p_b^n_b] over p ~ Dirichlet(alpha)."""
    n = 2_000_000
    p = np.random.default_rng(2024).dirichlet(np.full(5, alpha), size=n)  # (n, 5)
    logp = np.log(np.maximum(p, 1e-300))
    for counts in COUNTS:
        c = np.asarray(counts)
        w = np.exp(logp @ c)  # (n,) likelihood of the observed counts
        x = w[:, None] * p  # (n, 5)
        mc = x.mean(0) / w.mean()
        # delta-method standard error of the ratio estimator
        se = np.sqrt(((x - mc * w[:, None]) ** 2).mean(0) / n) / w.mean()
        exact = dirichlet_predictive(np.array(counts), [alpha])
        assert exact.shape == (5,)
        assert abs(exact.sum() - 1) < 1e-12
        np.testing.assert_allclose(exact, (np.array(counts) + alpha) / (sum(counts) + 5 * alpha), atol=1e-14)
        # tolerance: 6 Monte Carlo standard errors, and the estimate is informative (se < 0.001).
        # Measured: se <= 0.00035, |mc - exact| <= 0.00046, at most 2.6 standard errors.
        assert np.all(se < 0.001), se
        assert np.all(np.abs(mc - exact) <= 6 * se), (counts, mc, exact, se)


def chain_rule_log_prob(actions, alpha):
    """log P(sequence) = sum_t log (n_a(t) + alpha) / (t + 5 alpha): sequential predictives."""
    counts = [0] * 5
    total = 0.0
    for t, a in enumerate(actions):
        total += math.log((counts[a] + alpha) / (t + 5 * alpha))
        counts[a] += 1
    return total


@pytest.mark.parametrize("alpha", [0.01, 0.3, 1.0, 3.0])
def test_dirichlet_log_marginal_equals_chain_rule(alpha):
    rng = np.random.default_rng(int(alpha * 100))
    seqs = [[], [3], [0, 0], *[list(rng.integers(0, 5, size=rng.integers(1, 40))) for _ in range(30)]]
    counts = np.array([np.bincount(np.asarray(s, dtype=int), minlength=5) for s in seqs])
    batch = dirichlet_log_marginal(counts, alpha)  # vectorised over sequences
    assert batch.shape == (len(seqs),)
    for s, c, got in zip(seqs, counts, batch, strict=True):
        ref = chain_rule_log_prob(s, alpha)
        assert abs(dirichlet_log_marginal(c, alpha) - ref) < 1e-10
        assert abs(got - ref) < 1e-10
        # and the Gamma-function form
        lg = (sum(math.lgamma(k + alpha) - math.lgamma(alpha) for k in c)
              + math.lgamma(5 * alpha) - math.lgamma(len(s) + 5 * alpha))
        assert abs(got - lg) < 1e-9


def hand_mixture_predictive(counts, alphas, weights):
    """Enumerate alphas: posterior weight prior * marginal(counts | alpha), then mix predictives."""
    n = sum(counts)
    logs = []
    for a, w in zip(alphas, weights, strict=True):
        lm = (sum(math.lgamma(k + a) - math.lgamma(a) for k in counts) + math.lgamma(5 * a)
              - math.lgamma(n + 5 * a))
        logs.append(math.log(w) + lm)
    m = max(logs)
    post = [math.exp(x - m) for x in logs]
    z = sum(post)
    return np.array([sum(p / z * (counts[k] + a) / (n + 5 * a) for p, a in zip(post, alphas, strict=True))
                     for k in range(5)])


@pytest.mark.parametrize("weights", [None, (0.5, 0.1, 0.1, 0.1, 0.1, 0.1), (0.0, 0.0, 0.2, 0.3, 0.5, 0.0)])
def test_dirichlet_mixture_predictive_equals_enumeration(weights):
    alphas = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    rng = np.random.default_rng(1)
    counts = np.concatenate([np.array(COUNTS), rng.integers(0, 6, size=(20, 5)),
                             np.array([[12, 0, 0, 0, 0], [0, 0, 0, 0, 40]])])
    w = np.full(6, 1 / 6) if weights is None else np.asarray(weights)
    got = dirichlet_predictive(counts.reshape(3, 9, 5), alphas, weights)
    assert got.shape == (3, 9, 5)
    got = got.reshape(-1, 5)
    for c, g in zip(counts, got, strict=True):
        live = [(a, x) for a, x in zip(alphas, w, strict=True) if x > 0]
        ref = hand_mixture_predictive(list(c), [a for a, _ in live], [x for _, x in live])
        np.testing.assert_allclose(g, ref, rtol=0, atol=1e-12)
    # with one-sided evidence the small alphas win: the predictive concentrates on that action
    assert got[-1, 4] > 0.9 and got[-2, 0] > 0.8


# --- trait hypotheses: a plain reference ----------------------------------------------------------

BETA = {"focused": 3.0, "casual": 1.0, "erratic": 0.3}


def ref_trait_log_probs(traits, obs, cfg) -> np.ndarray:
    """(H, 5) log softmax(beta U_h) from one raw observation, with plain loops (personas' docstring)."""
    seg = split_observation(np.asarray(obs, dtype=np.float64), cfg)
    grid, table = seg["grid"], seg["agents"]
    ego = int(np.flatnonzero(table[:, 4] == 1)[0])
    me = (int(table[ego, 1]), int(table[ego, 2]))
    after = []
    for a in range(5):
        r, c = me[0] + int(MOVES[a][0]), me[1] + int(MOVES[a][1])
        after.append(me if grid[r, c, 1] > 0 else (r, c))
    gems = {col: [tuple(x) for x in np.argwhere(grid[..., 2 + k] > 0)] for k, col in enumerate(cfg.color_names)}
    others = {j: (int(table[j, 1]), int(table[j, 2])) for j in range(cfg.n_agents)
              if table[j, 0] > 0 and j != ego}
    out = []
    for h in traits:
        us = []
        for cell in after:
            u = 0.0
            if h.likes != "none" and gems[h.likes]:
                u -= GEM_WEIGHT * min(abs(cell[0] - g[0]) + abs(cell[1] - g[1]) for g in gems[h.likes])
            if h.social in ("approach", "avoid") and others:
                d = min(abs(cell[0] - p[0]) + abs(cell[1] - p[1]) for p in others.values())
                u += (-1 if h.social == "approach" else 1) * SOCIAL_WEIGHT * d
            if h.social == "follow" and h.follow in others:
                p = others[h.follow]
                u -= SOCIAL_WEIGHT * (abs(cell[0] - p[0]) + abs(cell[1] - p[1]))
            us.append(BETA[h.style] * u)
        m = max(us)
        lz = m + math.log(sum(math.exp(x - m) for x in us))
        out.append([x - lz for x in us])
    return np.array(out)


def stack(sits):
    return Situations(**{f: np.stack([getattr(s, f) for s in sits]) for f in Situations.FIELDS})


def record(cfg, specs, steps, seed, hyp):
    """Run one world; return (situations (T, 1, N), observations (T, 1, N, D), actions (T, 1, N))."""
    core = WorldCore(cfg)
    cast = Cast([specs], cfg, hyp)
    rng = np.random.default_rng(seed)
    state = core.reset(1, rng)
    cs = cast.initial_state()
    sits, obs, acts = [], [], []
    for _ in range(steps):
        sit = situations(core, state)
        a = sample_actions(cast.probs(sit, cs), rng)
        sits.append(sit)
        obs.append(core.observations(state))
        acts.append(a)
        core.step(state, a, rng)
        cs = cast.observe(cs, sit, a)
    return stack(sits), np.stack(obs), np.stack(acts)


FIT_CONFIGS = [
    (WorldConfig(n_agents=4), "followers"),
    (WorldConfig(n_agents=5, width=13, height=7, view_radius=2), "followers"),
    (WorldConfig(n_agents=4, width=9, height=9, view_radius=1, n_colors=2, gems_per_color=2), "traits"),
]


@pytest.mark.parametrize(("cfg", "pop_name"), FIT_CONFIGS, ids=["full", "view2_13x7", "view1_2col"])
def test_fit_equals_updates_and_brute_force_enumeration(cfg, pop_name):
    pop = get_population(pop_name)
    hyp = pop.hypotheses(cfg.n_colors, cfg.n_agents)
    rng = np.random.default_rng(0)
    specs = pop.sample_scene(cfg.n_agents, cfg.n_colors, rng, split="all")
    T = 12
    sits, obs, acts = record(cfg, specs, T, seed=1, hyp=hyp)
    observer = BayesObserver(hyp)
    fitted = observer.fit(sits, acts)  # (1, N, H)
    assert fitted.shape == (1, cfg.n_agents, len(hyp))
    # a loop of single-step updates
    lp = observer.prior((1, cfg.n_agents))
    for t in range(T):
        lp = observer.update(lp, sits.take(t), acts[t])
    np.testing.assert_allclose(fitted, lp, rtol=0, atol=1e-10)
    # brute force: log prior + sum_t log pi_h(a_t | s_t) with the plain reference
    for i in range(cfg.n_agents):
        brute = np.log(np.full(len(hyp), 1 / len(hyp)))
        for t in range(T):
            brute = brute + ref_trait_log_probs(hyp.traits, obs[t, 0, i], cfg)[:, acts[t, 0, i]]
        np.testing.assert_allclose(fitted[0, i], brute, rtol=0, atol=1e-10)
    # the mask drops steps: fit with a mask equals fit over the kept steps only
    mask = np.zeros((T, 1, cfg.n_agents), dtype=bool)
    mask[::3] = True
    np.testing.assert_allclose(observer.fit(sits, acts, mask), observer.fit(sits.take(slice(0, T, 3)), acts[::3]),
                               rtol=0, atol=1e-10)
    # the posterior predictive equals the reference mixture sum_h P(h|D) pi_h(a|s)
    post = observer.posterior(fitted)
    np.testing.assert_allclose(post.sum(-1), 1, atol=1e-12)
    sit_now = sits.take(T - 1)
    pred = observer.predictive(fitted, sit_now)  # (1, N, 5)
    for i in range(cfg.n_agents):
        ref = post[0, i] @ np.exp(ref_trait_log_probs(hyp.traits, obs[T - 1, 0, i], cfg))
        np.testing.assert_allclose(pred[0, i], ref, rtol=0, atol=1e-12)


def test_predictive_with_a_point_mass_is_that_hypothesis():
    cfg = WorldConfig(n_agents=6, view_radius=3)
    hyp = HypothesisSet.grid(cfg.n_colors, cfg.n_agents)
    observer = BayesObserver(hyp)
    state = WorldCore(cfg).reset(2, np.random.default_rng(3))
    sit = situations(WorldCore(cfg), state)  # (2, 6)
    probs = hyp.probs(sit)  # (2, 6, H, 5)
    for h in (0, 7, len(hyp) - 1):
        lp = np.full((2, 6, len(hyp)), -np.inf)
        lp[..., h] = 0.0
        np.testing.assert_array_equal(observer.predictive(lp, sit), probs[..., h, :])
        lp = np.full((2, 6, len(hyp)), -1e4)  # a finite, practically certain posterior
        lp[..., h] = 0.0
        np.testing.assert_allclose(observer.predictive(lp, sit), probs[..., h, :], rtol=0, atol=1e-15)


def test_hypothesis_set_prior_and_index():
    traits = [Trait("red", "none", "focused"), Trait("blue", "avoid", "casual"), Trait("none", "follow", "erratic", follow=1)]
    hyp = HypothesisSet(traits, 4, 3, prior=[0.5, 0.25, 0.25])
    assert len(hyp) == 3 and hyp.index(traits[2]) == 2
    np.testing.assert_allclose(np.exp(BayesObserver(hyp).prior((2,))), [[0.5, 0.25, 0.25]] * 2)
    grid = HypothesisSet.grid(4, 8)
    assert len(grid) == 5 * 3 * 3 and len(set(grid.traits)) == 45
    assert len(get_population("followers").hypotheses(4, 8)) == 5 * 3 * 3 + 5 * 3 * 8


# --- the posterior finds the truth ---------------------------------------------------------------
# Measured (16 seeds x 8 agents of population "traits", 11x11, 45 hypotheses, prior 1/45 = 0.022):
# mean posterior mass on the true trait after 10 -> 50 steps: all agents 0.216 -> 0.509,
# focused agents (42 of 128) 0.493 -> 0.826; agents with more than 10x the prior mass on the
# truth: 28% -> 58%. The thresholds below sit under these with margin.
SEEDS = range(16)


def test_posterior_mass_on_the_true_trait():
    pop = get_population("traits")
    cfg = WorldConfig(n_agents=8)
    hyp = pop.hypotheses(cfg.n_colors, cfg.n_agents)
    observer = BayesObserver(hyp)
    mass = {10: [], 50: []}
    focused = []
    for seed in SEEDS:
        specs = pop.sample_scene(8, cfg.n_colors, np.random.default_rng(seed))
        truth = np.array([hyp.index(s) for s in specs])
        sits, _, acts = record(cfg, specs, 50, seed=1000 + seed, hyp=hyp)
        for T in mass:
            post = observer.posterior(observer.fit(sits.take(slice(0, T)), acts[:T]))[0]  # (N, H)
            mass[T].append(post[np.arange(8), truth])
        focused.append([s.style == "focused" for s in specs])
    m10, m50 = np.concatenate(mass[10]), np.concatenate(mass[50])
    foc = np.concatenate(focused)
    print(f"posterior mass on truth: all {m10.mean():.3f} -> {m50.mean():.3f}; "
          f"focused {m10[foc].mean():.3f} -> {m50[foc].mean():.3f} ({foc.sum()} focused of {foc.size})")
    assert foc.sum() >= 20
    assert m50.mean() > 0.42
    assert m50[foc].mean() > 0.72
    # it increases with evidence, on average
    assert m50.mean() > m10.mean() + 0.2
    assert m50[foc].mean() > m10[foc].mean() + 0.2
    above = 10 / len(hyp)
    assert np.mean(m50 > above) > 0.45 and np.mean(m50 > above) > np.mean(m10 > above) + 0.15


def test_unrolled_softmax_over_actions_is_bit_identical_to_numpy():
    """softmax / log_softmax over 5 actions take an unrolled path for large arrays; it must give
    the very bits of the plain numpy formulas (max, then exp, then a sum added left to right)."""
    from mirrorhall.agents.bayes import _FAST_SIZE, _max5, _sum5, log_softmax, softmax

    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (40_000, 5)) * rng.choice([1e-3, 1.0, 30.0], size=(40_000, 1))
    assert x.size >= _FAST_SIZE
    e = np.exp(x - x.max(-1, keepdims=True))
    assert _max5(x).tobytes() == x.max(-1).tobytes()
    assert _sum5(e).tobytes() == e.sum(-1).tobytes()
    z = x - x.max(-1, keepdims=True)
    assert softmax(x).tobytes() == (np.exp(z) / np.exp(z).sum(-1, keepdims=True)).tobytes()
    assert log_softmax(x).tobytes() == (z - np.log(np.exp(z).sum(-1, keepdims=True))).tobytes()


def worlds(state: WorldState, index: slice) -> WorldState:
    """A copy of the worlds ``index`` of ``state`` (gem colours and time are shared by all)."""
    out = state.copy()
    for name in ("agent_pos", "gem_pos", "last_action", "valued", "collected"):
        setattr(out, name, getattr(state, name)[index].copy())
    return out


@pytest.mark.parametrize("view_radius,size", [(None, 10), (2, 10), (None, 40), (3, 40)])
def test_situations_small_and_large_batches_agree_bit_for_bit(view_radius, size):
    """``WorldCore.situations`` gathers distances from a cell table for small batches and
    computes them from coordinates for large ones (in int8 on a 10x10 grid, int16 on 40x40);
    both must give the same bits."""
    cfg = WorldConfig(n_agents=16, width=size, height=size, view_radius=view_radius,
                      interior_walls=((3, 3), (3, 4)))
    core = WorldCore(cfg)
    rng = np.random.default_rng(5)
    state = core.reset(24, rng)
    for _ in range(4):
        core.step(state, rng.integers(0, 5, (24, 16)), rng)
    whole = situations(core, state)  # 24 x 16 x 16 > 4096: coordinates
    for w in range(24):
        alone = situations(core, worlds(state, slice(w, w + 1)))  # 1 x 16 x 16: the cell table
        for f in Situations.FIELDS:
            assert getattr(alone, f)[0].tobytes() == getattr(whole, f)[w].tobytes(), f


def test_large_batch_agent_distances_are_computed_only_when_read():
    """Large batches hand ``agent_d`` over as a function: reading the field (directly, through
    ``take`` or by pickling) computes it once, with the same values as the per-agent path."""
    cfg = WorldConfig(n_agents=16)
    core = WorldCore(cfg)
    state = core.reset(24, np.random.default_rng(2))
    sit = situations(core, state)
    assert not sit.agent_d_is_computed
    part = sit.take((np.arange(3), np.zeros(3, np.int64)))
    assert not part.agent_d_is_computed  # still lazy
    tb = TraitBases(sit)
    assert not sit.agent_d_is_computed  # the shared bases do not need it either
    small = situations(core, worlds(state, slice(0, 3)))  # 3 x 16 x 16 <= 4096: the eager table path
    assert part.agent_d.tobytes() == small.agent_d[:, 0].tobytes()
    full = sit.agent_d
    assert full.flags["C_CONTIGUOUS"] and full.shape == (24, 16, 5, 16) and sit.agent_d is full
    assert tb._agent_arrays()[0] is full  # computed once, shared
    again = pickle.loads(pickle.dumps(situations(core, state)))
    assert again.agent_d.tobytes() == full.tobytes()


def test_a_cast_builds_the_bases_of_one_situations_once_and_they_change_nothing():
    """``Cast.bases`` keeps the bases of the situations asked about last: the same object for the
    same situations, new ones for new situations; a cast with a fresh memo for every question
    gives the same bits; a pickled cast carries no bases."""
    cfg = WorldConfig(n_agents=12, width=9, height=9)
    core = WorldCore(cfg)
    rng = np.random.default_rng(4)
    pop = get_population("crowd")
    cast = Cast([pop.sample_scene(12, cfg.n_colors, rng) for _ in range(5)], cfg, pop.hypotheses(cfg.n_colors, 12))
    state, cs = core.reset(5, rng), cast.initial_state()
    fresh = pickle.loads(pickle.dumps(cast))
    for _ in range(6):
        sit = situations(core, state)
        tb = cast.bases(sit)
        assert cast.bases(sit) is tb
        p = cast.probs(sit, cs)
        q = cast.probs_as(np.roll(np.arange(12), 1)[None].repeat(5, 0), sit, cs)
        assert cast.bases(sit) is tb
        fresh.bases = type(fresh.bases)()  # no memo shared between questions
        want_p = fresh.probs(sit, cs)
        fresh.bases = type(fresh.bases)()
        want_q = fresh.probs_as(np.roll(np.arange(12), 1)[None].repeat(5, 0), sit, cs)
        assert p.tobytes() == want_p.tobytes() and q.tobytes() == want_q.tobytes()
        a = sample_actions(p, rng)
        nxt = cast.observe(cs, sit, a)
        fresh.bases = type(fresh.bases)()
        assert nxt.log_belief.tobytes() == fresh.observe(cs, sit, a).log_belief.tobytes()
        core.step(state, a, rng)
        cs = nxt
        assert cast.bases(situations(core, state)) is not tb
    copy = pickle.loads(pickle.dumps(cast))
    assert copy.bases._sit is None and copy.bases._bases is None
