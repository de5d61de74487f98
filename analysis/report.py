"""Running probes, writing their JSON and plots, and the markdown report.

``DIR/NAME.json`` schema (every probe): ``probe``, ``checkpoint``, ``population``, ``seed``,
``episodes`` (or per-condition counts), ``conditions`` (a list of objects, one per condition,
each figure as ``{"mean", "ci95": [lo, hi], "n"}``), ``summary`` (the headline figures),
``targets`` (the figures they are judged against, where the project sets one) and
``seconds`` (wall time). ``DIR/NAME.png`` is its plot; ``DIR/report.md`` reads them all.

Each probe module owns its measurement, its plot and its report section, and judges its figures
against the ``targets`` of its own result; this module only runs them and joins the sections.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mirrorhall.analysis import (
    calibration,
    describe,
    false_belief,
    imitate,
    language,
    mirror,
    outcome,
    second_order,
    self_probe,
)
from mirrorhall.analysis.common import ModelProbe
from mirrorhall.analysis.reporting import json_default
from mirrorhall.errors import ConfigError, OutputError
from mirrorhall.validate import (
    BOOL,
    COUNT,
    LIST,
    NULL,
    NUMBER,
    OBJECT,
    TEXT,
    Kind,
    Source,
    is_number,
    list_of,
)

# probe name (CLI, DIR/NAME.json, report heading) -> its module: run(probe, population, episodes=,
# seed=) -> result, plot(result, path), section(result) -> markdown lines; in report order
PROBES = {
    "calibration": calibration,
    "describe": describe,
    "imitate": imitate,
    "self": self_probe,
    "second_order": second_order,
    "mirror_test": mirror,
    "outcome": outcome,
    "false_belief": false_belief,
    "language": language,
}
# the probes that run wordings of the user's own (``--prompt``): each module's ``WORDINGS``
PROMPTED = ("imitate", "self", "second_order", "describe", "outcome")
# the probes that take ``--targets`` (each module's ``TARGETS``): imitate's pi_test, describe's personas
TARGETED = ("imitate", "describe")
# episodes at each scale: "tiny" for a few seconds per probe, "small" for CI and the demo, "full" for
# docs/results.md; the language probe's are imitate-sized (it shares them out over its kinds' probes)
SCALES = {
    "tiny": {"calibration": 2, "describe": 2, "imitate": 7, "self": 7, "second_order": 4, "mirror_test": 4,
             "outcome": 4, "false_belief": 8, "language": 7},
    "small": {"calibration": 12, "describe": 16, "imitate": 42, "self": 42, "second_order": 24, "mirror_test": 40,
              "outcome": 8, "false_belief": 48, "language": 42},
    "full": {"calibration": 64, "describe": 64, "imitate": 280, "self": 280, "second_order": 64, "mirror_test": 200,
             "outcome": 24, "false_belief": 400, "language": 280},
}


def run_probe(name: str, probe: ModelProbe, out: Path, population: str, seed: int = 0,
              episodes: int | None = None, scale: str = "small", prompts=(), targets: str = "traits",
              seeds: int = 1) -> dict:
    """Run probe ``name`` and write ``out/NAME.json`` and its plot; ``prompts``: wordings of the
    user's own for a probe of ``PROMPTED`` (``--prompt``); ``targets``: for a probe of ``TARGETED``,
    "traits" (its default) or a persona family (imitate: pi_test drawn from it; describe: only its
    personas described); ``seeds``: the language probe pools that many seeds from ``seed``."""
    if name not in PROBES:
        raise ConfigError(f"unknown probe {name!r}; allowed: {', '.join(PROBES)}, all")
    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
    if targets != "traits" and name not in TARGETED:
        raise ConfigError(f"targets {targets!r} apply to the probes {', '.join(TARGETED)} only")
    extra = {"targets": targets} if targets != "traits" else {}
    if seeds != 1:
        if name != "language":
            raise ConfigError(f"seeds pools the language probe only; not {name}")
        extra["seeds"] = seeds
    if prompts:
        if name not in PROMPTED:
            raise ConfigError(f"--prompt works with the probes {', '.join(PROMPTED)}; not with {name}")
        extra["prompts"] = PROBES[name].WORDINGS.check(prompts)
        PROBES[name].WORDINGS.warn_unread(probe.tokenizer, extra["prompts"])
    t0 = time.perf_counter()
    result = PROBES[name].run(probe, population, episodes=episodes or SCALES[scale][name], seed=seed, **extra)
    result = {"checkpoint": probe.path, **result, "seconds": round(time.perf_counter() - t0, 2)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1, default=json_default) + "\n")
    plot(result, out / f"{name}.png")
    return result


def plot(result: dict, path: Path) -> None:
    """The standard figure of any probe result, drawn by the probe's own module."""
    PROBES[result["probe"]].plot(result, path)


GLOSSARY = (
    ("Bayes (observer)", "the exact Bayes-optimal observer: it knows the population's hypotheses and "
     "priors and updates on every action it sees; the best any observer of those scenes can do."),
    ("Bayes_train", "the exact observer under the *training* population's prior (its trait personas and "
     "random agents, in their training proportions): the best a model trained on that mix can do."),
    ("cross-entropy (CE)", "the expected surprise, in nats, of a prediction under the true action "
     "distribution, computed exactly (not sampled); lower is better, never below the truth's entropy."),
    ("fraction of attainable information", "(CE_prior - CE_model) / (CE_prior - CE_bayes): 0 is no better "
     "than the prior, 1 is as good as the Bayes observer."),
    ("KL(p‖q)", "the cross-entropy of q under p minus p's entropy: 0 when q predicts exactly as p."),
    ("K, N_past", "how many steps (actions) of the agent in question the model has observed before it is "
     "asked."),
    ("OTHER(theta)", "a baseline that ignores the imitation: agent theta's own trait, as if it imitated "
     "no one."),
    ("pi_test", "the persona being imitated or predicted in a probe: its exact action distribution is the "
     "truth the model is scored against."),
    ("prior (observer)", "the observer that knows the population's hypotheses but has seen no action."),
    ("theta, phi", "in second_order, theta is the agent that imitates phi (agent 0, whose seat the model "
     "takes)."),
    ("SELF", "a baseline that assumes perfect imitation: the imitated agent's own distribution."),
    ("target", "the bound a probe's figure is judged against (stated in its JSON's `targets`): `met` or "
     "`MISSED`; a dashed line in its plot."),
    ("95% interval", "a bootstrap interval over scenes (episodes), shown in brackets and as error bars."),
)
"""The terms every probe's section uses, defined once at the end of the report."""


def glossary() -> list[str]:
    """The report's glossary section."""
    return ["## Glossary", "", *(f"- **{term}**: {text}" for term, text in GLOSSARY), ""]


def _is_figure(value) -> bool:
    """``{"mean", "ci95": [lo, hi], "n"}``: a finite mean with a finite interval, or no mean (not measured)."""
    if not isinstance(value, dict) or set(value) - {"mean", "ci95", "n"} or "mean" not in value:
        return False
    ci, mean = value.get("ci95"), value["mean"]
    if not (isinstance(ci, list) and len(ci) == 2) or not (mean is None or is_number(mean)):
        return False
    bounds = all(map(is_number, ci)) if mean is not None else all(v is None or is_number(v) for v in ci)
    return bounds and (value.get("n") is None or COUNT(value["n"]))


FIGURE = Kind("a figure {'mean': number or null, 'ci95': [lo, hi], 'n': count}", _is_figure)
MEASURE = NUMBER | NULL
INTERVAL = list_of(MEASURE, 2)


def _is_tail(value) -> bool:
    """``excess_tail``'s object: how much of the shortfall the worst scenes hold."""
    return isinstance(value, dict) and set(value) == {"worst", "excess_ce", "share_of_excess", "fraction_without"} \
        and COUNT(value["worst"]) and list_of(NUMBER)(value["excess_ce"]) \
        and MEASURE(value["share_of_excess"]) and MEASURE(value["fraction_without"])


TAIL = Kind("the worst scenes' share {'worst', 'excess_ce', 'share_of_excess', 'fraction_without'} or null",
            lambda v: v is None or _is_tail(v))
SCALAR = NUMBER | TEXT | NULL | BOOL
# What each probe's section (and plot) reads from its result: field -> kind, "?" after an optional
# field. Conditions (and the essay's) are checked row by row; summary and target values not named
# here must be numbers or null, and any other object inside a condition or ``closed_loop`` a figure.
_FIGURES = {"kl_bayes_model", "kl_true_model", "kl_true_bayes", "kl", "ce", "entropy_floor", "ce_model", "ce_bayes",
            "ce_prior", "fraction", "ce_self", "ce_other", "margin_vs_self", "margin_vs_other", "accuracy_model",
            "accuracy_bayes", "achieved", "control", "difference"}
RESULT_FIELDS: dict[str, dict] = {
    "calibration": {"conditions": {"alpha": NUMBER, "N_past": NUMBER, "kl_bayes_model": FIGURE,
                                   "kl_true_model": FIGURE, "kl_true_bayes": FIGURE, "kl_train_bayes_model?": FIGURE},
                    "train_prior?": OBJECT},
    "describe": {"conditions": {"condition": TEXT, "kl": FIGURE, "ce": FIGURE, "entropy_floor": FIGURE,
                                "queries": NUMBER, "family?": TEXT, "split?": TEXT, "unread_words?": list_of(TEXT)},
                 "family_pools?": OBJECT},
    "imitate": {"conditions": {"K": NUMBER, "ce_model": FIGURE, "ce_bayes": FIGURE, "ce_prior": FIGURE,
                               "fraction": FIGURE, "tail?": TAIL},
                "closed_loop?": OBJECT, "pi_test?": TEXT},
    "second_order": {"conditions": {"K": NUMBER, "ce_model": FIGURE, "ce_self": FIGURE, "ce_other": FIGURE,
                                    "ce_bayes": FIGURE, "margin_vs_self": FIGURE, "margin_vs_other": FIGURE},
                     "essay?": OBJECT, "summary": {"margin_vs_self_ci95?": INTERVAL, "margin_vs_other_ci95?": INTERVAL},
                     "target_values": NUMBER | TEXT | NULL},
    "mirror_test": {"conditions": {"setting?": TEXT, "steps_observed": NUMBER, "accuracy_model": FIGURE,
                                   "accuracy_bayes": FIGURE, "chance": NUMBER},
                    "settings?": list_of(TEXT)},
    "outcome": {"conditions": {"asked": NUMBER, "achieved": FIGURE, "control": FIGURE, "difference": FIGURE}},
    "self": {"conditions": {"K": NUMBER, "ce_model": FIGURE, "ce_bayes": FIGURE, "ce_prior": FIGURE,
                            "fraction": FIGURE, "tail?": TAIL}},
    "language": {"conditions": {"kind": TEXT, "role": TEXT, "prompt": TEXT, "family?": TEXT | NULL, "figure": FIGURE},
                 "kinds": OBJECT, "minimal_pairs?": OBJECT},
    "false_belief": {"conditions": {"subject": TEXT, "layouts": NUMBER, "effect_model": FIGURE, "effect_bayes": FIGURE,
                                    "effect_truth?": FIGURE},
                     "curve": {"subject": TEXT, "distance": NUMBER, "seen": BOOL, "effect_model?": FIGURE,
                               "effect_bayes?": FIGURE, "effect_truth?": FIGURE},
                     "view_radius": NUMBER,
                     "summary": {"effect_model_ci95?": INTERVAL, "effect_bayes_ci95?": INTERVAL,
                                 "effect_truth_ci95?": INTERVAL, "control_effect_model_ci95?": INTERVAL,
                                 "control_effect_bayes_ci95?": INTERVAL, "control_effect_truth_ci95?": INTERVAL,
                                 "effect_ratio_ci95?": INTERVAL, "control_within_bayes_interval?": BOOL,
                                 "effect_bayes_watching_ci95?": INTERVAL,
                                 "control_effect_bayes_watching_ci95?": INTERVAL,
                                 "effect_ratio_watching_ci95?": INTERVAL, "watching_ceiling_ci95?": INTERVAL},
                     "target_values": NUMBER | TEXT | NULL},
}
_SPECIAL = ("conditions", "summary", "target_values", "curve")
# the language probe's verdicts per kind and its minimal pairs, as its section reads them
_KIND_FIELDS = {"figure": TEXT, "explain": TEXT, "canonical": MEASURE, "held_out": LIST, "filler_max_change": MEASURE,
                "filler_worst": TEXT | NULL, "controls": LIST}
_HELD_FIELDS = {"family": TEXT, "mean": MEASURE, "ratio": MEASURE, "difference": MEASURE}
_CONTROL_FIELDS = {"role": TEXT, "prompt": TEXT, "mean": MEASURE, "like_meaning": BOOL, "words": TEXT}
_PAIRS_FIELDS = {"accuracy": FIGURE, "members": OBJECT, "situations": COUNT, "left_out": COUNT, "K": COUNT,
                 "example": list_of(TEXT), "chance": NUMBER, "ceiling?": FIGURE, "bayes_other?": FIGURE}


def _check_fields(src: Source, data: dict, spec: dict, where: str = "") -> None:
    """Every field of ``spec`` (``"name?"``: optional) present in ``data`` as its kind."""
    for key, kind in spec.items():
        if key.endswith("?"):
            src.field(data, key[:-1], kind, default=None, where=where)
        else:
            src.field(data, key, kind, where=where)


def read_result(path: Path, name: str) -> dict:
    """The result JSON of probe ``name`` at ``path``, every value its section reads checked
    (``mirrorhall.validate``); ``ConfigError`` naming the file, the field and the fix otherwise."""
    src = Source(path, ConfigError, f"re-run mirrorhall probe {name}")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not valid JSON; re-run mirrorhall probe {name}") from None
    r = src.load_json(text)
    if not isinstance(r, dict) or r.get("probe") != name or not isinstance(r.get("conditions"), list):
        raise ConfigError(f"{path} is not a result of probe {name}; re-run mirrorhall probe {name}")
    spec = RESULT_FIELDS[name]
    summary = src.field(r, "summary", OBJECT, default={})
    named = spec.get("summary", {})
    _check_fields(src, summary, named, where="summary ")
    for k, v in summary.items():
        if k + "?" not in named and k not in named:
            src.check(v, MEASURE, f"summary {k!r}")
    for k, v in src.field(r, "targets", OBJECT, default={}).items():
        src.check(v, spec.get("target_values", MEASURE), f"targets {k!r}")
    _check_fields(src, r, {k: v for k, v in spec.items() if k not in _SPECIAL})
    tables = [("conditions", r["conditions"], spec["conditions"])]
    if "curve" in spec:  # rows of a curve, checked as the conditions are
        tables.append(("curve", src.field(r, "curve", LIST), spec["curve"]))
    if isinstance(r.get("essay"), dict):  # the essay's rows: the same figures but Bayes
        essay = {k: v for k, v in spec["conditions"].items() if k != "ce_bayes"}
        tables.append(("essay conditions", src.field(r["essay"], "conditions", LIST, where="essay "), essay))
    for where, rows, fields in tables:
        for i, row in enumerate(rows):
            src.check(row, OBJECT, f"{where} item {i}")
            _check_fields(src, row, fields, where=f"{where} item {i} ")
            for k, v in row.items():  # fields the spec names are checked above as their kind
                if k not in fields and k + "?" not in fields and (isinstance(v, dict) or k in _FIGURES):
                    src.check(v, FIGURE, f"{where} item {i} {k!r}")
    for k, v in (r.get("closed_loop") or {}).items():  # figures (shares, distances) and step counts
        src.check(v, FIGURE if k.endswith(("_share", "_near")) else SCALAR, f"closed_loop {k!r}")
    for key in ("checkpoint", "population", "agents", "seconds"):
        src.field(r, key, SCALAR, default=None)
    for i, entry in enumerate(src.field(r, "prompts", LIST, default=None) or []):  # the wordings run
        src.check(entry, OBJECT, f"prompts item {i}")
        src.field(entry, "prompt", TEXT, where=f"prompts item {i} ")
        for k, v in entry.items():
            if k != "prompt":
                figures = v.values() if isinstance(v, dict) and "mean" not in v else [v]
                for f in figures:
                    src.check(f, FIGURE if isinstance(f, dict) else NUMBER, f"prompts item {i} {k!r}")
    if name == "describe":  # the persona families of each split, pooled
        for which, pool in (r.get("family_pools") or {}).items():
            src.check(pool, OBJECT, f"family_pools {which!r}")
            _check_fields(src, pool, {"kl": FIGURE, "families": list_of(TEXT)}, where=f"family_pools {which!r} ")
    if name == "language":
        for kind, entry in r["kinds"].items():
            src.check(entry, OBJECT, f"kinds {kind!r}")
            _check_fields(src, entry, _KIND_FIELDS, where=f"kinds {kind!r} ")
            for what, fields in (("held_out", _HELD_FIELDS), ("controls", _CONTROL_FIELDS)):
                for j, item in enumerate(entry[what]):
                    src.check(item, OBJECT, f"kinds {kind!r} {what} item {j}")
                    _check_fields(src, item, fields, where=f"kinds {kind!r} {what} item {j} ")
        if r.get("minimal_pairs") is not None:
            _check_fields(src, r["minimal_pairs"], _PAIRS_FIELDS, where="minimal_pairs ")
            for member, v in r["minimal_pairs"]["members"].items():
                src.check(v, FIGURE, f"minimal_pairs members {member!r}")
    return r


def write_report(folder: Path) -> Path:
    """``folder/report.md`` from every ``*.json`` probe result in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder of probe results; run mirrorhall probe --out {folder} first")
    results = {}
    for name in PROBES:
        path = folder / f"{name}.json"
        if path.exists():
            results[name] = read_result(path, name)
    if not results:
        raise ConfigError(f"{folder} holds no probe results (*.json); run mirrorhall probe all --out {folder}")
    any_r = next(iter(results.values()))
    lines = ["# mirrorhall probe report", "",
             f"Checkpoint: `{any_r.get('checkpoint')}`. Population: `{any_r.get('population')}`. "
             "Figures are means over scenes with 95% bootstrap intervals; cross-entropies are exact "
             "expectations under the target's true distribution (nats).", ""]
    for name, r in results.items():
        lines += [f"## {name}", "", f"![{name}]({name}.png)", ""]
        lines += PROBES[name].section(r)
        lines += [f"_{r.get('seconds', '?')} s._", ""]
    lines += glossary()
    out = folder / "report.md"
    try:
        out.write_text("\n".join(lines) + "\n")
    except OSError as err:
        raise OutputError(f"cannot write {out} ({err.strerror}); make {folder} writable or copy it") from None
    return out

