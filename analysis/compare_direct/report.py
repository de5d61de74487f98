"""``compare-direct``'s outputs: ``DIR/compare_direct.json`` (the result), ``.png`` (cross-entropy
against environment steps, averaged and per persona) and ``.md`` (the tables)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mirrorhall.analysis.reporting import fmt_ci, json_default

NAME = "compare_direct"
LOG5 = math.log(5)  # a uniform policy's cross-entropy over the 5 actions


def write_outputs(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(result, indent=1, default=json_default) + "\n")
    plot(result, out / f"{NAME}.png")
    (out / f"{NAME}.md").write_text(markdown(result))


def _series(result: dict, method: str, persona: str, key: str = "ce"):
    rows = sorted((c for c in result["conditions"] if c["method"] == method and c["persona"] == persona),
                  key=lambda c: c["env_steps"])
    x = np.array([c["env_steps"] for c in rows], dtype=float)
    m = np.array([np.nan if c[key]["mean"] is None else c[key]["mean"] for c in rows])
    lo = np.array([np.nan if c[key]["ci95"][0] is None else c[key]["ci95"][0] for c in rows])
    hi = np.array([np.nan if c[key]["ci95"][1] is None else c[key]["ci95"][1] for c in rows])
    return x, m, lo, hi


def plot(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    names = ["mean"] + [p["describe"] for p in result["personas"]]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.9 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for method, key, label, style in (("ppo", "ce", "PPO, reward log pi_test(a|s)", dict(color="C3", marker="o")),
                                          ("model", "ce", "model told 'behave as agent k'", dict(color="C0", marker="s")),
                                          ("model", "ce_bayes", "Bayes observer (same K steps)", dict(color="C2", ls="--"))):
            x, m, lo, hi = _series(result, method, name, key)
            ax.plot(x, m, label=label, ms=3, **style)
            ax.fill_between(x, lo, hi, color=style["color"], alpha=0.15)
        _, ent, _, _ = _series(result, "ppo", name, "entropy")
        ax.axhline(ent[0], color="k", ls=":", lw=1, label="entropy of pi_test (floor)")
        ax.axhline(LOG5, color="0.6", lw=1, label="uniform (log 5)")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        ax.set_xlabel("environment steps (PPO: sampled; model: steps of pi_test watched)")
        ax.set_ylabel("cross-entropy vs pi_test (nats)")
        ax.set_title("averaged over personas" if name == "mean" else name, fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Direct optimisation (PPO) vs generalisation + inference (shared model)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = [
        "# Direct optimisation vs generalisation + inference",
        "",
        f"Checkpoint `{result['checkpoint']}`, population `{result['population']}`, seed {result['seed']}, "
        f"{len(result['personas'])} trait personas pi_test, {result['episodes']} scenes each, "
        f"{result['iterations']} PPO iterations of {result['train_batch_size']} env steps; {result['seconds']} s.",
        "",
        "Cross-entropy (nats) against pi_test in held-out situations, mean [95% CI], averaged over personas.",
        f"Floor (entropy of pi_test): {s['entropy_floor']:.3f}; uniform: {LOG5:.3f}.",
        "",
        "| method | env steps | cross-entropy |",
        "|---|---:|---|",
    ]
    for c in result["conditions"]:
        if c["persona"] != "mean":
            continue
        label = ("PPO, reward log pi_test" if c["method"] == "ppo" else "model, K steps watched")
        lines.append(f"| {label} | {c['env_steps']} | {fmt_ci(c['ce'])} |")
    lines += ["", "Bayes observer with the same K steps (ceiling of the model):", "",
              "| K | Bayes | prior |", "|---:|---|---|"]
    for c in result["conditions"]:
        if c["persona"] == "mean" and c["method"] == "model":
            lines.append(f"| {c['env_steps']} | {fmt_ci(c['ce_bayes'])} | {fmt_ci(c['ce_prior'])} |")
    lines += ["", "Per persona (PPO at its final budget vs the model at the largest K):", "",
              "| persona | PPO final (env steps) | model, K = max |", "|---|---|---|"]
    kmax = max(result["ks"])
    for p in result["personas"]:
        ppo = [c for c in result["conditions"] if c["method"] == "ppo" and c["persona"] == p["describe"]][-1]
        mod = [c for c in result["conditions"] if c["method"] == "model" and c["persona"] == p["describe"]
               and c["env_steps"] == kmax][0]
        lines.append(f"| {p['describe']} | {fmt_ci(ppo['ce'])} ({ppo['env_steps']}) | {fmt_ci(mod['ce'])} |")
    match = s[f"ppo_env_steps_to_match_model_K{kmax}"]
    lines += ["", f"PPO reached the model's K={kmax} cross-entropy after: "
              + (f"{match} env steps." if match is not None else "not within this budget.")]
    return "\n".join(lines) + "\n"
