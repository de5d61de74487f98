"""Probe ``describe``: language -> behaviour.

In random situations of recorded scenes, the model is told "behave as a focused agent that likes
red gems and avoids others" (any trait combination) and scored against that persona's exact
distribution in the situation: KL = cross-entropy minus the persona's entropy (its floor).
Conditions: seen combinations with training paraphrases; held-out combinations (never in
training data) with training paraphrases; seen combinations with the held-out paraphrase.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.bayes import HypothesisSet
from mirrorhall.agents.cast import trait_probs
from mirrorhall.agents.personas import Trait
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import run_scene
from mirrorhall.analysis.common import (
    ModelProbe,
    Scene,
    Wordings,
    cross_entropy,
    entropy,
    mean_ci,
    wording_text,
)
from mirrorhall.analysis.reporting import (
    axes,
    fmt_ci,
    mean_of,
    save,
    target_line,
    verdict,
    wordings_table,
    yerr,
)
from mirrorhall.envs.core import WorldConfig
from mirrorhall.imitation.prompts import CANONICAL, TEMPLATES, Kind, render

CONDITIONS = ("seen", "held_out_combination", "held_out_paraphrase")
WORDINGS = Wordings("describe", CANONICAL[Kind.DESCRIBE], fills=("desc",), needs=("desc",))
"""``--prompt`` for this probe: ``{desc}`` (required) is the described persona ("a focused agent
that likes red gems and avoids others")."""


def run(probe: ModelProbe, population: str, episodes: int = 32, seed: int = 0, agents: int = 8,
        steps: int = 30, queries_per_episode: int = 24, prompts=()) -> dict:
    """``prompts``: wordings of the user's own (``{desc}``: the persona), each asked in the same
    situations, of the same personas, as the ``seen`` condition (the result's ``prompts`` list:
    KL to the persona, the canonical "behave as {desc}" first)."""
    wordings = WORDINGS.all(prompts)
    rng = streams.rng(streams.PROBE_DRAWS["describe"], seed)
    pop = get_population(population)
    n_colors = probe.model.config.n_colors
    world = WorldConfig(n_agents=agents, n_colors=n_colors, max_cycles=steps)
    rows = [pop.sample_scene(agents, n_colors, rng, split="train") for _ in range(episodes)]
    scene = Scene.from_episode(run_scene(world, rows, steps, streams.int_seed(streams.PROBE_SCENES["describe"], seed, 0)))
    seen = [c for c in pop.combos(n_colors, "train") if c[1] != "follow"]
    held = [c for c in pop.combos(n_colors, "held_out") if c[1] != "follow"]
    train_t = [i for i, t in enumerate(TEMPLATES[Kind.DESCRIBE]) if not t.held_out]
    held_t = [i for i, t in enumerate(TEMPLATES[Kind.DESCRIBE]) if t.held_out]
    out, worded = {}, []
    probe.expect(len(CONDITIONS))
    for cond in CONDITIONS:
        combos = held if cond == "held_out_combination" else seen
        temps = held_t if cond == "held_out_paraphrase" else train_t
        if not combos or not temps:
            probe.tick()
            continue
        q = episodes * queries_per_episode
        w = np.repeat(np.arange(episodes), queries_per_episode)
        agent = rng.integers(agents, size=q)
        t = rng.integers(steps, size=q)
        traits = [Trait(*combos[i]) for i in rng.integers(len(combos), size=q)]
        prompts = [render(Kind.DESCRIBE, temps[rng.integers(len(temps))], trait=h).text for h in traits]
        codes = HypothesisSet(traits, n_colors, agents)
        truth = np.zeros((q, 5))
        for step in np.unique(t):
            sel = np.flatnonzero(t == step)
            sit = scene.situation(int(step), w[sel], agent[sel])
            truth[sel] = trait_probs(sit, codes.likes[sel], codes.social[sel], codes.beta[sel])
        model = probe.query(scene, w, agent, t, prompts)
        ce, floor = cross_entropy(truth, model), entropy(truth)
        if cond == "seen":
            for template in wordings:
                p = probe.query(scene, w, agent, t, [wording_text(template, trait=h) for h in traits])
                worded.append({"prompt": template, "kl": mean_ci(_per_episode(cross_entropy(truth, p) - floor, w, episodes))})
        out[cond] = {"kl": mean_ci(_per_episode(ce - floor, w, episodes)), "ce": mean_ci(_per_episode(ce, w, episodes)),
                     "entropy_floor": mean_ci(_per_episode(floor, w, episodes)), "queries": int(q),
                     "combinations": len(combos), "example_prompt": prompts[0]}
        probe.tick()
    return {"probe": "describe", "population": population, "agents": agents, "episodes": episodes,
            "seed": seed, "conditions": [{"condition": k, **v} for k, v in out.items()],
            "summary": {"kl_seen": out["seen"]["kl"]["mean"],
                        "kl_held_out_combination": out.get("held_out_combination", {}).get("kl", {}).get("mean"),
                        "kl_held_out_paraphrase": out.get("held_out_paraphrase", {}).get("kl", {}).get("mean")},
            "targets": {"kl_seen": 0.05}, "prompts": worded}


def _per_episode(x: np.ndarray, world: np.ndarray, episodes: int) -> list[float]:
    """One value per episode, so intervals resample episodes rather than correlated queries."""
    return [float(x[world == e].mean()) for e in range(episodes)]


def plot(result: dict, path: Path):
    """KL to the described persona per condition, with 95% intervals; the target for seen
    combinations as a dashed line."""
    fig, ax = axes()
    cond = result["conditions"]
    labels = [c["condition"] for c in cond]
    ax.bar(labels, [mean_of(c, "kl") for c in cond], yerr=np.hstack([yerr(c, "kl") for c in cond]), capsize=4,
           label="KL, 95% interval")
    bound = result.get("targets", {}).get("kl_seen")
    target_line(ax, bound, f"seen <= {bound:g} nats" if bound is not None else "")
    ax.set_ylabel("KL to the described persona (nats)")
    return save(fig, ax, result, path)


def section(r: dict) -> list[str]:
    """The report's table and verdict (a KL: at most the result's own target)."""
    s, c = r.get("summary", {}), r["conditions"]
    rows = ["| condition | KL to persona | cross-entropy | entropy floor | queries |", "|---|---|---|---|---|"]
    rows += [f"| {x['condition']} | {fmt_ci(x['kl'])} | {fmt_ci(x['ce'])} | {fmt_ci(x['entropy_floor'])} | {x['queries']} |" for x in c]
    bound = r.get("targets", {}).get("kl_seen")
    within = "close to the floor" if bound is None else f"within {bound} nats of the floor"
    return rows + ["", f"Target: seen combinations {within} {verdict(s.get('kl_seen'), bound, higher=False)}.", "",
                   *wordings_table(r, "KL to the persona, seen combinations", lambda e: e.get("kl"))]
