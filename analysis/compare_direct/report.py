"""``compare-direct``'s outputs: ``DIR/compare_direct.json`` (the result), ``.png`` (cross-entropy and
KL to pi_test against environment steps, log axis: every PPO learner's mean curve and runs, the model
and Bayes after K watched steps) and ``.md`` (the tables, the essay's table measured first)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from mirrorhall.analysis.reporting import fmt_ci, json_default
from mirrorhall.files import atomic_write

NAME = "compare_direct"
LOG5 = math.log(5)  # a uniform policy's cross-entropy over the 5 actions

LABELS = {"flat": "PPO from pixels (MLP, flat observation)",
          "relational": "PPO on the model's inputs (relational features)",
          "rllib": "PPO from pixels (RLlib MLP)"}
COLORS = {"flat": "C3", "relational": "C1", "rllib": "C4"}


def write_outputs(result: dict, out: Path) -> None:
    out = Path(out)
    atomic_write(out / f"{NAME}.json", (json.dumps(result, indent=1, default=json_default) + "\n").encode())
    buf = io.BytesIO()
    plot(result, buf)
    atomic_write(out / f"{NAME}.png", buf.getvalue())
    atomic_write(out / f"{NAME}.md", markdown(result).encode())


def _ci(rows: list[dict], key: str):
    m = np.array([np.nan if r[key]["mean"] is None else r[key]["mean"] for r in rows])
    lo = np.array([np.nan if r[key]["ci95"][0] is None else r[key]["ci95"][0] for r in rows])
    hi = np.array([np.nan if r[key]["ci95"][1] is None else r[key]["ci95"][1] for r in rows])
    return m, lo, hi


def plot(result: dict, path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    fig = Figure(figsize=(12, 4.6))
    axes = fig.subplots(1, 2)
    model = [m for m in result["model"] if m["persona"] == "mean"]
    ks = np.array([m["K"] for m in model], dtype=float)
    floor = result["summary"]["entropy_floor"]
    for ax, key, bayes_key in ((axes[0], "ce", "ce_bayes"), (axes[1], "kl", "kl_bayes")):
        for learner in result["learners"]:
            rows = [c for c in result["curves"] if c["learner"] == learner]
            x = np.array([c["env_steps"] for c in rows], dtype=float)
            m, lo, hi = _ci(rows, key)
            color = COLORS.get(learner, "C5")
            for r in (r for r in result["runs"] if r["learner"] == learner):
                ax.plot([c["env_steps"] for c in r["curve"]], [c[key]["mean"] for c in r["curve"]], color=color,
                        lw=0.6, alpha=0.3)
            ax.plot(x, m, color=color, marker="o", ms=3, label=LABELS.get(learner, learner))
            ax.fill_between(x, lo, hi, color=color, alpha=0.15)
        m, lo, hi = _ci(model, key)
        ax.errorbar(ks, m, yerr=[m - lo, hi - m], color="C0", marker="s", ms=4, capsize=2,
                    label="shared model told 'behave as agent k' (x = K steps watched)")
        b, _, _ = _ci(model, bayes_key)
        ax.plot(ks, b, color="C2", ls="--", marker="^", ms=4, label="Bayes observer (same K steps)")
        if key == "ce":
            ax.axhline(floor, color="k", ls=":", lw=1, label="entropy of pi_test (floor)")
            ax.axhline(LOG5, color="0.6", lw=1, label="uniform (log 5)")
            ax.set_ylabel("cross-entropy vs pi_test (nats)")
        else:
            ax.axhline(result["tolerance"], color="k", ls=":", lw=1, label="convergence tolerance")
            ax.set_yscale("log")
            ax.set_ylabel("KL(pi_test || q) = CE - entropy (nats)")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        ax.set_xlabel("environment steps (PPO: sampled; model and Bayes: steps of pi_test watched)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Direct optimisation (PPO) vs generalise, then infer (shared model): {len(result['personas'])} "
                 f"personas x {result['seeds']} seeds, means with 95% intervals", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")


def _steps(d: dict) -> str:
    if d["mean"] is None:
        return "-"
    lo, hi = d["ci95"]
    if d["reached"] == 0:
        return f"not reached (> {d['mean']:,.0f})"
    if hi <= 1:
        return "0 (the untrained policy is already there)"
    text = f"{d['mean']:,.0f} [{lo:,.0f}, {hi:,.0f}]"
    return f">= {text} ({d['reached']}/{d['n']} reached)" if d["lower_bound"] else text


def markdown(result: dict) -> str:
    s = result["summary"]
    budget = result["budget"]
    mean_model = {m["K"]: m for m in result["model"] if m["persona"] == "mean"}
    lines = [
        "# Direct optimisation vs generalise, then infer",
        "",
        f"Checkpoint `{result['checkpoint']}`, population `{result['population']}`, seed {result['seed']}, "
        f"{len(result['personas'])} trait personas pi_test x {result['seeds']} PPO seeds, {result['episodes']} "
        f"held-out scenes each. PPO learners: {', '.join(result['learners'])}; budget {budget:,} env steps per run "
        f"({result['train_batch_size']} per iteration, {result['worlds']} vectorised worlds), stopping early once "
        f"KL to pi_test <= {result['tolerance']} nats (and <= the model's KL at every K below); {result['seconds']} s.",
        "",
        "Quality is KL(pi_test || q) = cross-entropy minus pi_test's entropy (nats) in held-out situations. "
        "Env steps: PPO's sampled steps; the model's K, the steps of pi_test it watched (it is never trained "
        "on pi_test and gets no reward).",
        "",
        "## The essay's table, measured",
        "",
        "Env steps each PPO learner needs to reach the shared model's KL after K watched steps (per run, "
        "interpolated on its curve in log env steps; geometric mean over personas x seeds [95% bootstrap "
        "interval over runs]); `>=` marks a lower bound where some runs never reached it within the budget. "
        "Ratio: PPO's env steps / K.",
        "",
    ]
    head = "| K | generalise, then infer: model KL | Bayes KL |"
    rule = "|---:|---|---|"
    for learner in result["learners"]:
        head += f" direct optimisation, {LABELS.get(learner, learner)}: env steps | ratio |"
        rule += "---|---:|"
    lines += [head, rule]
    for k in sorted({r["K"] for r in result["ratios"]}):
        m = mean_model[k]
        row = f"| {k} | {fmt_ci(m['kl'])} | {fmt_ci(m['kl_bayes'])} |"
        for learner in result["learners"]:
            r = next(r for r in result["ratios"] if r["learner"] == learner and r["K"] == k)
            ratio = "-" if r["steps_per_K"] is None else (
                f"{'>= ' if r['steps']['lower_bound'] else ''}{r['steps_per_K']:,.{0 if r['steps_per_K'] >= 10 else 2}f}")
            row += f" {_steps(r['steps'])} | {ratio} |"
        lines.append(row)
    lines += ["", "## Learning curves", "",
              "Cross-entropy (nats) against pi_test, mean over runs [95% bootstrap interval over runs]; a run that "
              "stopped once converged keeps its last value. "
              f"Floor (entropy of pi_test): {s['entropy_floor']:.3f}; uniform: {LOG5:.3f}.", ""]
    grid = sorted({c["env_steps"] for c in result["curves"]})
    lines += ["| env steps | " + " | ".join(LABELS.get(x, x) for x in result["learners"]) + " |",
              "|---:|" + "---|" * len(result["learners"])]
    for x in grid:
        cells = []
        for learner in result["learners"]:
            c = next((c for c in result["curves"] if c["learner"] == learner and c["env_steps"] == x), None)
            cells.append("" if c is None else fmt_ci(c["ce"]))
        lines.append(f"| {x:,} | " + " | ".join(cells) + " |")
    lines += ["", "The shared model and the Bayes observer after K watched steps (averaged over personas):", "",
              "| K | model CE | Bayes CE | prior CE | model KL |", "|---:|---|---|---|---|"]
    for k, m in sorted(mean_model.items()):
        lines.append(f"| {k} | {fmt_ci(m['ce'])} | {fmt_ci(m['ce_bayes'])} | {fmt_ci(m['ce_prior'])} | {fmt_ci(m['kl'])} |")
    lines += ["", "## Runs", "",
              "| learner | persona | seed | untrained CE | final CE | final KL | env steps | converged | s | env steps/s |",
              "|---|---|---:|---|---|---|---:|---|---:|---:|"]
    for r in result["runs"]:
        first, last = r["curve"][0], r["curve"][-1]
        conv = "-" if r.get("converged") is None else ("yes" if r["converged"] else "no")
        lines.append(f"| {r['learner']} | {r['persona']} | {r['seed']} | {first['ce']['mean']:.3f} | "
                     f"{fmt_ci(last['ce'])} | {last['kl']['mean']:.3f} | {r['env_steps']:,} | {conv} | "
                     f"{r.get('seconds', '-')} | {r.get('env_steps_per_s', '-')} |")
    if any(t.get("env_steps") for t in result["throughput"].values()):
        lines += ["", "Throughput (runs trained here, 1 process, vectorised worlds): "
                  + "; ".join(f"{x}: {t['env_steps_per_s']:,.0f} env steps/s overall, "
                              f"{t['sampling_env_steps_per_s']:,.0f} while sampling"
                              for x, t in result["throughput"].items() if t.get("env_steps"))
                  + "."]
    return "\n".join(lines) + "\n"
