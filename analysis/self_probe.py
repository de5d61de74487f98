"""Probe ``self``: after watching itself for K steps, can the model behave as itself?

The SELF half of the essay's step 2. In scenes built as ``imitate``'s are (agent k a trait
persona of the training split, at a persona-independent random start), the model takes agent k's
own seat, with k's memory of its first K steps, and is told "behave as yourself". Its action
distribution is scored by the exact expected cross-entropy under k's own distribution in k's own
situation, beside the Bayes-optimal observer (posterior over the population's trait hypotheses
from k's own K observed (situation, action) pairs) and the prior-only observer. Fraction of
attainable information: (CE_prior - CE_model) / (CE_prior - CE_bayes).

Every agent is its scripted persona here (the model acts in no scene), so what the model sees of
"itself" is exactly k's behaviour.
"""

from __future__ import annotations

from pathlib import Path

from mirrorhall.agents.bayes import BayesObserver
from mirrorhall.analysis.common import ModelProbe, Wordings
from mirrorhall.analysis.imitate import (
    KS,
    fraction_conditions,
    new_tally,
    score_watched,
    tail_lines,
    watched_scenes,
    wording_fractions,
)
from mirrorhall.analysis.reporting import axes, errorbars, fmt_ci, save, verdict, wordings_table

WORDINGS = Wordings("self", "behave as yourself", fills=("k",), needs=())
"""``--prompt`` for this probe: ``{k}``, where given, is the seat's own id ("behave as agent {k}")."""


def run(probe: ModelProbe, population: str, episodes: int = 70, seed: int = 0, agents: int = 8,
        ks=KS, prompts=()) -> dict:
    """``prompts``: wordings of the user's own, each run on the same scenes as the canonical
    "behave as yourself" (the result's ``prompts`` list)."""
    wordings = WORDINGS.all(prompts)
    _, groups, hyp, scenes = watched_scenes(probe, "self", population, episodes, seed, agents, max(ks), driven=False)
    observer = BayesObserver(hyp)
    ce = new_tally(ks, wordings)
    probe.expect(len(groups))
    for ws in scenes:
        score_watched(probe, ws, observer, "target", ks, wordings, ce)
        probe.tick()
    conditions = fraction_conditions(ce, ks)
    frac = {c["K"]: c["fraction"]["mean"] for c in conditions}
    return {
        "probe": "self", "population": population, "agents": agents, "episodes": episodes, "seed": seed,
        "prompt": WORDINGS.canonical, "hypotheses": len(hyp), "conditions": conditions,
        "summary": {"fraction_at_K10": frac.get(10)}, "targets": {},
        "prompts": wording_fractions(ce, ks, wordings),
    }


def plot(result: dict, path: Path):
    """Left: cross-entropy of the model, Bayes and the prior against K. Right: the fraction of
    attainable information, one line per wording (the canonical template first). All with 95%
    intervals."""
    fig, (left, right) = axes(2)
    cond = result["conditions"]
    ks = [c["K"] for c in cond]
    for key, label, style in (("ce_model", "model", "o-"), ("ce_bayes", "Bayes", "s--"), ("ce_prior", "prior only", "^:")):
        errorbars(left, ks, cond, key, fmt=style, label=label)
    left.set_ylabel("cross-entropy under its own policy (nats)")
    for i, entry in enumerate(result.get("prompts") or [{"prompt": result.get("prompt"), "fraction": {
            str(c["K"]): c["fraction"] for c in cond if c["K"] > 0}}]):
        shown = sorted(entry["fraction"], key=int)
        errorbars(right, [int(k) for k in shown], [{"f": entry["fraction"][k]} for k in shown], "f",
                  fmt="o-" if i == 0 else ".--", label=f"'{entry['prompt']}'"[:40])
    right.axhline(1.0, color="grey", linestyle=":", linewidth=1, label="Bayes (1 by definition)")
    right.set_ylabel("fraction of attainable information")
    for ax in (left, right):
        ax.set_xscale("symlog", linthresh=1)
        ax.minorticks_off()
        ax.set_xlabel("K, own steps observed before 'behave as yourself'")
    left.set_xticks(ks, [str(k) for k in ks])
    return save(fig, [left, right], result, path)


def section(r: dict) -> list[str]:
    """The report's table; this probe states no target (the fraction is read beside imitate's)."""
    s, c, targets = r.get("summary", {}), r["conditions"], r.get("targets", {})
    rows = ["The model sits in agent k's own seat, told 'behave as yourself' after k (itself) acted for K "
            "steps; it is scored against k's own action distribution.", "",
            "| K | model | Bayes | prior | fraction of attainable information |", "|---|---|---|---|---|"]
    rows += [f"| {x['K']} | {fmt_ci(x['ce_model'])} | {fmt_ci(x['ce_bayes'])} | {fmt_ci(x['ce_prior'])} | "
             f"{fmt_ci(x['fraction'])} |" for x in c]
    rows += ["", f"Fraction at K=10: {verdict(s.get('fraction_at_K10'), targets.get('fraction_at_K10'))}.", ""]
    rows += tail_lines(c)
    return rows + wordings_table(r, "fraction at K=10", lambda e: e["fraction"].get("10", {}))

