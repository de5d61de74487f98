"""Running probes, writing their JSON and plots, and the markdown report.

``DIR/NAME.json`` schema (every probe): ``probe``, ``checkpoint``, ``population``, ``seed``,
``episodes`` (or per-condition counts), ``conditions`` (a list of objects, one per condition,
each figure as ``{"mean", "ci95": [lo, hi], "n"}``), ``summary`` (the headline figures),
``targets`` (the figures they are judged against, where the project sets one) and
``seconds`` (wall time). ``DIR/NAME.png`` is its plot; ``DIR/report.md`` reads them all.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from mirrorhall.analysis import calibration, describe, imitate, mirror_test, outcome, second_order
from mirrorhall.analysis.common import ModelProbe

PROBES = {
    "calibration": calibration,
    "describe": describe,
    "imitate": imitate,
    "second_order": second_order,
    "mirror_test": mirror_test,
    "outcome": outcome,
}
# episodes at each scale: "small" for CI and the demo, "full" for docs/results.md
SCALES = {
    "small": {"calibration": 12, "describe": 16, "imitate": 42, "second_order": 24, "mirror_test": 40, "outcome": 8},
    "full": {"calibration": 64, "describe": 64, "imitate": 280, "second_order": 64, "mirror_test": 200, "outcome": 24},
}


def run_probe(name: str, probe: ModelProbe, out: Path, population: str, seed: int = 0,
              episodes: int | None = None, scale: str = "small") -> dict:
    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}; allowed: {', '.join(PROBES)}, all")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
    t0 = time.perf_counter()
    result = PROBES[name].run(probe, population, episodes=episodes or SCALES[scale][name], seed=seed)
    result = {"checkpoint": probe.path, **result, "seconds": round(time.perf_counter() - t0, 2)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    plot(result, out / f"{name}.png")
    return result


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))


def _m(c, key):
    return c[key]["mean"] if c[key]["mean"] is not None else np.nan


def _err(c, key):
    lo, hi = c[key]["ci95"]
    m = c[key]["mean"]
    if m is None or lo is None:
        return [[0], [0]]
    return [[m - lo], [hi - m]]


def plot(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    name = result["probe"]
    cond = result["conditions"]
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    if name == "imitate":
        ks = [c["K"] for c in cond]
        for key, label, style in (("ce_model", "model", "o-"), ("ce_bayes", "Bayes", "s--"), ("ce_prior", "prior only", "^:")):
            ax.errorbar(ks, [_m(c, key) for c in cond], yerr=np.hstack([_err(c, key) for c in cond]), fmt=style,
                        label=label, capsize=3)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("K, steps observed before 'behave as agent k'")
        ax.set_ylabel("cross-entropy under pi_test (nats)")
    elif name == "calibration":
        for alpha in sorted({c["alpha"] for c in cond}):
            cs = [c for c in cond if c["alpha"] == alpha]
            line, = ax.plot([c["N_past"] for c in cs], [_m(c, "kl_bayes_model") for c in cs], "o-", label=f"alpha={alpha:g}")
            if "kl_train_bayes_model" in cs[0]:
                ax.plot([c["N_past"] for c in cs], [_m(c, "kl_train_bayes_model") for c in cs], ":",
                        color=line.get_color())
        ax.set_xlabel("N_past observed actions")
        ax.set_ylabel("KL(Bayes || model) (nats); dotted: Bayes_train")
    elif name == "describe":
        labels = [c["condition"] for c in cond]
        ax.bar(labels, [_m(c, "kl") for c in cond], yerr=np.hstack([_err(c, "kl") for c in cond]), capsize=4)
        ax.set_ylabel("KL to the described persona (nats)")
    elif name == "second_order":
        ks = [c["K"] for c in cond]
        for key, label in (("ce_model", "model"), ("ce_self", "SELF baseline"), ("ce_other", "OTHER(theta) baseline"),
                           ("ce_bayes", "Bayes")):
            ax.plot(ks, [_m(c, key) for c in cond], "o-", label=label)
        ax.set_xlabel("K, steps observed")
        ax.set_ylabel("cross-entropy under theta's true policy (nats)")
    elif name == "mirror_test":
        for setting, colour in zip(result.get("settings", ["crowd"]), ("C0", "C1"), strict=False):
            rows = [c for c in cond if c.get("setting", "crowd") == setting]
            xs = [c["steps_observed"] for c in rows]
            ax.plot(xs, [_m(c, "accuracy_model") for c in rows], "o-", color=colour, label=f"model, {setting}")
            ax.plot(xs, [_m(c, "accuracy_bayes") for c in rows], "s--", color=colour, label=f"Bayes, {setting}")
        ax.plot(xs, [c["chance"] for c in rows], ":", color="grey", label="chance")
        ax.set_xlabel("steps observed")
        ax.set_ylabel("identification accuracy")
        ax.set_ylim(0, 1.05)
    elif name == "outcome":
        xs = [c["asked"] for c in cond]
        ax.errorbar(xs, [_m(c, "achieved") for c in cond], yerr=np.hstack([_err(c, "achieved") for c in cond]),
                    fmt="o-", label="asked", capsize=3)
        ax.plot(xs, [_m(c, "control") for c in cond], "s--", label="'behave as yourself'")
        ax.set_xlabel("gems of the colour asked for")
        ax.set_ylabel(f"gems of that colour collected in {result.get('horizon')} steps")
    ax.set_title(f"{name} ({result.get('population')}, seed {result.get('seed')})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def _ci(d: dict) -> str:
    if d.get("mean") is None:
        return "-"
    lo, hi = d["ci95"]
    return f"{d['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def _verdict(value, target, higher=True) -> str:
    if value is None:
        return "not measured"
    ok = value >= target if higher else value <= target
    return f"{'met' if ok else 'MISSED'} ({_fmt(value)} vs target {'>=' if higher else '<='} {target})"


def write_report(folder: Path) -> Path:
    """``folder/report.md`` from every ``*.json`` probe result in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of probe results; run mirrorhall probe --out {folder} first")
    results = {}
    for name in PROBES:
        path = folder / f"{name}.json"
        if path.exists():
            try:
                results[name] = json.loads(path.read_text())
            except json.JSONDecodeError:
                raise ValueError(f"{path} is not valid JSON; re-run mirrorhall probe {name}") from None
    if not results:
        raise ValueError(f"{folder} holds no probe results (*.json); run mirrorhall probe all --out {folder}")
    any_r = next(iter(results.values()))
    lines = ["# mirrorhall probe report", "",
             f"Checkpoint: `{any_r.get('checkpoint')}`. Population: `{any_r.get('population')}`. "
             "Figures are means over scenes with 95% bootstrap intervals; cross-entropies are exact "
             "expectations under the target's true distribution (nats).", ""]
    for name, r in results.items():
        lines += [f"## {name}", "", f"![{name}]({name}.png)", ""]
        lines += _section(name, r)
        lines += [f"_{r.get('seconds', '?')} s._", ""]
    out = folder / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def _section(name: str, r: dict) -> list[str]:
    s, c = r.get("summary", {}), r["conditions"]
    if name == "imitate":
        rows = ["| K | model | Bayes | prior | fraction of attainable information |", "|---|---|---|---|---|"]
        rows += [f"| {x['K']} | {_ci(x['ce_model'])} | {_ci(x['ce_bayes'])} | {_ci(x['ce_prior'])} | {_ci(x['fraction'])} |" for x in c]
        cl = r.get("closed_loop", {})
        rows += ["", f"Targets: fraction at K=10 {_verdict(s.get('fraction_at_K10'), 0.9)}; "
                     f"mean over K>=5 {_verdict(s.get('mean_fraction_K_ge_5'), 0.8)}.", "",
                 f"Closed loop (prompt switched at step {cl.get('switch_at')}): share of pi_test's liked colour "
                 f"among gems collected: model as k {_ci(cl.get('model_as_k_share', {}))}, pi_test itself "
                 f"{_ci(cl.get('k_share', {}))}, model as itself {_ci(cl.get('model_self_share', {}))}. Mean distance "
                 f"to the nearest agent: model as k {_ci(cl.get('model_as_k_near', {}))}, pi_test "
                 f"{_ci(cl.get('k_near', {}))}, model as itself {_ci(cl.get('model_self_near', {}))}.", ""]
        return rows
    if name == "calibration":
        rows = ["| alpha | N_past | KL(Bayes‖model) | KL(true‖model) | KL(true‖Bayes) | KL(Bayes_train‖model) |",
                "|---|---|---|---|---|---|"]
        rows += [f"| {x['alpha']:g} | {x['N_past']} | {_ci(x['kl_bayes_model'])} | {_ci(x['kl_true_model'])} | "
                 f"{_ci(x['kl_true_bayes'])} | {_ci(x['kl_train_bayes_model']) if 'kl_train_bayes_model' in x else '-'} |"
                 for x in c]
        rows += ["", f"Target: mean KL(Bayes‖model) for N_past >= 1 "
                     f"{_verdict(s.get('mean_kl_bayes_model_npast_ge_1'), 0.05, higher=False)}."]
        if s.get("mean_kl_train_bayes_model_npast_ge_1") is not None:
            w = r.get("train_prior", {})
            rows += ["", f"Bayes_train is the exact observer under the training population's prior (trait personas "
                         f"{w.get('trait')}, random agents {w.get('species')}; imitators and mirrors left out): "
                         f"mean KL(Bayes_train‖model) for N_past >= 1 {_fmt(s['mean_kl_train_bayes_model_npast_ge_1'])}."]
        return rows + [""]
    if name == "describe":
        rows = ["| condition | KL to persona | cross-entropy | entropy floor | queries |", "|---|---|---|---|---|"]
        rows += [f"| {x['condition']} | {_ci(x['kl'])} | {_ci(x['ce'])} | {_ci(x['entropy_floor'])} | {x['queries']} |" for x in c]
        return rows + ["", f"Target: seen combinations within 0.05 nats of the floor {_verdict(s.get('kl_seen'), 0.05, higher=False)}.", ""]
    if name == "second_order":
        rows = ["| K | model | SELF | OTHER(theta) | Bayes | margin vs SELF | margin vs OTHER |", "|---|---|---|---|---|---|---|"]
        rows += [f"| {x['K']} | {_ci(x['ce_model'])} | {_ci(x['ce_self'])} | {_ci(x['ce_other'])} | {_ci(x['ce_bayes'])} | {_ci(x['margin_vs_self'])} | {_ci(x['margin_vs_other'])} |" for x in c]
        if "essay" in r:
            rows += ["", "Essay setting (theta is a model copy told 'behave as agent 0'):", "",
                     "| K | model | SELF | OTHER(theta) | margin vs SELF | margin vs OTHER |", "|---|---|---|---|---|---|"]
            rows += [f"| {x['K']} | {_ci(x['ce_model'])} | {_ci(x['ce_self'])} | {_ci(x['ce_other'])} | {_ci(x['margin_vs_self'])} | {_ci(x['margin_vs_other'])} |" for x in r["essay"]["conditions"]]
        ok_self = s.get("margin_vs_self_ci95", [None])[0]
        ok_other = s.get("margin_vs_other_ci95", [None])[0]
        verdict = "met" if (ok_self is not None and ok_self > 0 and ok_other is not None and ok_other > 0) else "MISSED"
        return rows + ["", f"Target (K={s.get('K')}): better than both baselines with intervals above 0: {verdict} "
                           f"(margin vs SELF {_fmt(s.get('margin_vs_self'))}, vs OTHER {_fmt(s.get('margin_vs_other'))}).", ""]
    if name == "mirror_test":
        rows = ["| setting | steps observed | model | Bayes | chance |", "|---|---|---|---|---|"]
        rows += [f"| {x.get('setting', 'crowd')} | {x['steps_observed']} | {_ci(x['accuracy_model'])} | "
                 f"{_ci(x['accuracy_bayes'])} | {x['chance']:.3f} |" for x in c]
        at20 = {x.get("setting", "crowd"): x["accuracy_model"]["mean"] for x in c if x["steps_observed"] == 20}
        verdicts = "; ".join(f"{setting} {_verdict(at20.get(setting), 0.9)}" for setting in r.get("settings", ["crowd"]))
        return rows + ["", f"Target: accuracy with {r.get('agents')} agents after 20 steps: {verdicts}.", ""]
    if name == "outcome":
        rows = ["| asked | achieved | control (behave as yourself) | difference |", "|---|---|---|---|"]
        rows += [f"| {x['asked']} | {_ci(x['achieved'])} | {_ci(x['control'])} | {_ci(x['difference'])} |" for x in c]
        return rows + ["", f"Slope of achieved per asked gem: {_fmt(s.get('slope_achieved_per_asked'))}.", ""]
    return []
