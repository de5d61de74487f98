"""Probe ``calibration``: ToMnet's random-agent experiment.

Agent k is a random agent whose fixed action distribution was drawn from Dirichlet(alpha), alpha in
ALPHAS. After N_past of its actions, the model (in agent 0's seat) is asked "behave as agent k".
Reported per alpha and N_past: KL(Bayes || model) and KL(true || model), where Bayes is the exact
predictive ``(n_a + alpha) / (n + 5 alpha)`` marginalised over the population's alphas (uniform),
and, for reference, KL(true || Bayes), the part no observer can remove.

That Bayes observer knows that agent k is a random agent. A model trained on a mixed population
cannot: one action of agent k is also evidence about a trait persona. So each condition also
reports KL(Bayes_train || model), where Bayes_train is the exact observer under the training
population's own prior over its trait personas (training combinations, uniform) and random
agents, in proportion to their weights in the mix (the population's imitators and mirrors, whose
likelihoods depend on other agents, are left out). It predicts
``P(random | D) * Dirichlet predictive + P(trait | D) * trait predictive in agent 0's situation``;
for a population of random agents only it is the Bayes observer above.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.bayes import (
    BayesObserver,
    HypothesisSet,
    dirichlet_log_evidence,
    dirichlet_predictive,
)
from mirrorhall.agents.personas import Species, Trait
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import run_scene
from mirrorhall.analysis.common import ModelProbe, Scene, kl, mean_ci
from mirrorhall.analysis.reporting import (
    axes,
    errorbars,
    fmt,
    fmt_ci,
    mean_of,
    save,
    target_line,
    verdict,
)
from mirrorhall.envs.core import WorldConfig

ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
N_PAST = (0, 1, 5, 10)


def run(probe: ModelProbe, population: str, episodes: int = 24, seed: int = 0, agents: int = 8,
        alphas=ALPHAS, n_past=N_PAST) -> dict:
    """``episodes`` scenes per alpha."""
    rng = streams.rng(streams.PROBE_DRAWS["calibration"], seed)
    pop = get_population(population)
    prior_alphas = pop.alphas
    n_colors = probe.model.config.n_colors
    steps = max(n_past)
    world = WorldConfig(n_agents=agents, n_colors=n_colors, max_cycles=steps + 1)
    mix = dict(pop.mix)
    w_trait, w_species = mix.get("trait", 0.0), mix.get("species", 0.0)
    traits = [Trait(*c) for c in pop.combos(n_colors, "train") if c[1] != "follow"]
    trait_obs = BayesObserver(HypothesisSet(traits, n_colors, agents)) if w_trait > 0 and traits else None
    conditions = []
    probe.expect(len(alphas) * len([n for n in n_past if n <= steps]))
    for scene_index, alpha in enumerate(alphas):
        rows, targets = [], []
        for e in range(episodes):
            k = 1 + e % (agents - 1)
            row = list(pop.sample_scene(agents, n_colors, rng, split="train"))
            row[k] = Species.draw(alpha, rng)
            rows.append(row)
            targets.append(k)
        scene = Scene.from_episode(run_scene(world, rows, steps, streams.int_seed(streams.PROBE_SCENES["calibration"], seed, scene_index)))
        b = len(rows)
        w, k = np.arange(b), np.asarray(targets)
        truth = np.array([rows[i][targets[i]].probs for i in range(b)])  # (B, 5)
        acts = scene.episode.actions[:, w, k]  # (T, B)
        log_post = trait_obs.prior((b,)) if trait_obs else None  # log P(h, D) over trait hypotheses
        for n in range(steps + 1):
            if n in n_past:
                counts = np.stack([np.bincount(acts[:n, i], minlength=5) for i in range(b)])
                bayes = dirichlet_predictive(counts, prior_alphas)
                model = probe.query(scene, w, np.zeros(b), np.full(b, n), [f"behave as agent {t}" for t in targets])
                train_bayes = bayes if trait_obs is None else _trait_or_random(
                    trait_obs, log_post, scene.situation(n, w, np.zeros(b, np.int64)), bayes, counts,
                    prior_alphas, w_trait, w_species)
                conditions.append({
                    "alpha": alpha, "N_past": n,
                    "kl_bayes_model": mean_ci(kl(bayes, model)),
                    "kl_true_model": mean_ci(kl(truth, model)),
                    "kl_true_bayes": mean_ci(kl(truth, bayes)),
                    "kl_train_bayes_model": mean_ci(kl(train_bayes, model)),
                })
                probe.tick()
            if trait_obs is not None and n < steps:
                log_post = trait_obs.update(log_post, scene.situation(n, w, k), acts[n])
    past = [c["kl_bayes_model"]["mean"] for c in conditions if c["N_past"] >= 1]
    past_train = [c["kl_train_bayes_model"]["mean"] for c in conditions if c["N_past"] >= 1]
    return {
        "probe": "calibration", "population": population, "agents": agents, "episodes_per_alpha": episodes,
        "seed": seed, "prior_alphas": list(prior_alphas), "conditions": conditions,
        "summary": {"mean_kl_bayes_model_npast_ge_1": float(np.mean(past)) if past else None,
                    "mean_kl_train_bayes_model_npast_ge_1": float(np.mean(past_train)) if past_train else None},
        "train_prior": {"trait": w_trait, "species": w_species, "trait_hypotheses": len(traits)},
        "targets": {"mean_kl_bayes_model_npast_ge_1": 0.05},
    }


def _trait_or_random(trait_obs: BayesObserver, log_post: np.ndarray, sit, random_pred: np.ndarray,
                     counts: np.ndarray, alphas, w_trait: float, w_species: float) -> np.ndarray:
    """Bayes_train's predictive: P(trait | D) x the trait predictive in ``sit`` + P(random | D) x
    ``random_pred``, with prior weights ``w_trait`` and ``w_species``."""
    as_trait = trait_obs.predictive(log_post, sit)
    if w_species == 0:
        return as_trait
    log_odds = (np.log(w_species) + dirichlet_log_evidence(counts, alphas) - np.log(w_trait)
                - trait_obs.log_evidence(log_post))  # log P(random, D) - log P(trait, D)
    p_trait = 1.0 / (1.0 + np.exp(log_odds))
    return p_trait[:, None] * as_trait + (1.0 - p_trait[:, None]) * random_pred


def plot(result: dict, path: Path):
    """KL(Bayes || model) against N_past with 95% intervals, one line per alpha (nudged apart
    sideways so their bars stay legible); dotted: KL(Bayes_train || model); the target as a
    dashed line."""
    from matplotlib.lines import Line2D

    fig, ax = axes()
    cond = result["conditions"]
    alphas = sorted({c["alpha"] for c in cond})
    nudge = 0.3 / max(len(alphas), 1)
    dotted = False
    for i, alpha in enumerate(alphas):
        cs = [c for c in cond if c["alpha"] == alpha]
        xs = [c["N_past"] + (i - (len(alphas) - 1) / 2) * nudge for c in cs]
        bars = errorbars(ax, xs, cs, "kl_bayes_model", label=f"alpha={alpha:g}")
        if "kl_train_bayes_model" in cs[0]:
            dotted = True
            ax.plot(xs, [mean_of(c, "kl_train_bayes_model") for c in cs], ":", color=bars.lines[0].get_color())
    key = "mean_kl_bayes_model_npast_ge_1"
    target_line(ax, result.get("targets", {}).get(key), f"mean over N_past >= 1 <= {result.get('targets', {}).get(key)}")
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", marker="o", label="solid: KL(Bayes||model), 95% interval")]
    if dotted:
        handles += [Line2D([], [], color="grey", linestyle=":", label="dotted: KL(Bayes_train||model)")]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.set_figwidth(9.0)
    ax.set_xticks(sorted({c["N_past"] for c in cond}))
    ax.set_xlabel("N_past observed actions")
    ax.set_ylabel("KL to the model's prediction (nats)")
    return save(fig, ax, result, path)


def section(r: dict) -> list[str]:
    """The report's table and verdict (a KL: at most the result's own target)."""
    s, c = r.get("summary", {}), r["conditions"]
    rows = ["| alpha | N_past | KL(Bayes‖model) | KL(true‖model) | KL(true‖Bayes) | KL(Bayes_train‖model) |",
            "|---|---|---|---|---|---|"]
    rows += [f"| {x['alpha']:g} | {x['N_past']} | {fmt_ci(x['kl_bayes_model'])} | {fmt_ci(x['kl_true_model'])} | "
             f"{fmt_ci(x['kl_true_bayes'])} | {fmt_ci(x['kl_train_bayes_model']) if 'kl_train_bayes_model' in x else '-'} |"
             for x in c]
    key = "mean_kl_bayes_model_npast_ge_1"
    rows += ["", f"Target: mean KL(Bayes‖model) for N_past >= 1 "
                 f"{verdict(s.get(key), r.get('targets', {}).get(key), higher=False)}."]
    if s.get("mean_kl_train_bayes_model_npast_ge_1") is not None:
        w = r.get("train_prior", {})
        rows += ["", f"Bayes_train is the exact observer under the training population's prior (trait personas "
                     f"{w.get('trait')}, random agents {w.get('species')}; imitators and mirrors left out): "
                     f"mean KL(Bayes_train‖model) for N_past >= 1 {fmt(s['mean_kl_train_bayes_model_npast_ge_1'])}."]
    return rows + [""]
