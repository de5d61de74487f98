"""Probe ``calibration``: ToMnet's random-agent experiment.

Agent k is a random agent whose fixed action distribution was drawn from Dirichlet(alpha), alpha in
ALPHAS. After N_past of its actions, the model (in agent 0's seat) is asked "behave as agent k".
Reported per alpha and N_past: KL(Bayes || model) and KL(true || model), where Bayes is the exact
predictive ``(n_a + alpha) / (n + 5 alpha)`` marginalised over the population's alphas (uniform),
and, for reference, KL(true || Bayes), the part no observer can remove.
"""

from __future__ import annotations

import numpy as np

from mirrorhall.agents.bayes import dirichlet_predictive
from mirrorhall.agents.personas import Species
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import run_scene
from mirrorhall.analysis.common import ModelProbe, Scene, int_seed, kl, mean_ci, probe_seed
from mirrorhall.envs.core import WorldConfig

ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
N_PAST = (0, 1, 5, 10)


def run(probe: ModelProbe, population: str, episodes: int = 24, seed: int = 0, agents: int = 8,
        alphas=ALPHAS, n_past=N_PAST) -> dict:
    """``episodes`` scenes per alpha."""
    ss = probe_seed("calibration", seed)
    rng = np.random.default_rng(ss)
    pop = get_population(population)
    prior_alphas = pop.alphas
    n_colors = probe.model.config.n_colors
    steps = max(n_past)
    world = WorldConfig(n_agents=agents, n_colors=n_colors, max_cycles=steps + 1)
    conditions = []
    for alpha in alphas:
        rows, targets = [], []
        for e in range(episodes):
            k = 1 + e % (agents - 1)
            row = list(pop.sample_scene(agents, n_colors, rng, split="train"))
            row[k] = Species.draw(alpha, rng)
            rows.append(row)
            targets.append(k)
        scene = Scene.from_episode(run_scene(world, rows, steps, int_seed(ss.spawn(1)[0])))
        b = len(rows)
        w, k = np.arange(b), np.asarray(targets)
        truth = np.array([rows[i][targets[i]].probs for i in range(b)])  # (B, 5)
        acts = scene.episode.actions[:, w, k]  # (T, B)
        for n in n_past:
            counts = np.stack([np.bincount(acts[:n, i], minlength=5) for i in range(b)])
            bayes = dirichlet_predictive(counts, prior_alphas)
            model = probe.query(scene, w, np.zeros(b), np.full(b, n), [f"behave as agent {t}" for t in targets])
            conditions.append({
                "alpha": alpha, "N_past": n,
                "kl_bayes_model": mean_ci(kl(bayes, model)),
                "kl_true_model": mean_ci(kl(truth, model)),
                "kl_true_bayes": mean_ci(kl(truth, bayes)),
            })
    past = [c["kl_bayes_model"]["mean"] for c in conditions if c["N_past"] >= 1]
    return {
        "probe": "calibration", "population": population, "agents": agents, "episodes_per_alpha": episodes,
        "seed": seed, "prior_alphas": list(prior_alphas), "conditions": conditions,
        "summary": {"mean_kl_bayes_model_npast_ge_1": float(np.mean(past)) if past else None},
        "targets": {"mean_kl_bayes_model_npast_ge_1": 0.05},
    }
