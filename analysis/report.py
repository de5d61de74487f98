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

from mirrorhall.analysis import calibration, describe, imitate, mirror, outcome, second_order
from mirrorhall.analysis.common import ModelProbe
from mirrorhall.analysis.reporting import json_default
from mirrorhall.errors import ConfigError, OutputError

# probe name (CLI, DIR/NAME.json, report heading) -> its module: run(probe, population, episodes=,
# seed=) -> result, plot(result, path), section(result) -> markdown lines; in report order
PROBES = {
    "calibration": calibration,
    "describe": describe,
    "imitate": imitate,
    "second_order": second_order,
    "mirror_test": mirror,
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
        raise ConfigError(f"unknown probe {name!r}; allowed: {', '.join(PROBES)}, all")
    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
    t0 = time.perf_counter()
    result = PROBES[name].run(probe, population, episodes=episodes or SCALES[scale][name], seed=seed)
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


def write_report(folder: Path) -> Path:
    """``folder/report.md`` from every ``*.json`` probe result in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder of probe results; run mirrorhall probe --out {folder} first")
    results = {}
    for name in PROBES:
        path = folder / f"{name}.json"
        if path.exists():
            try:
                results[name] = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ConfigError(f"{path} is not valid JSON; re-run mirrorhall probe {name}") from None
            r = results[name]
            if not isinstance(r, dict) or r.get("probe") != name or not isinstance(r.get("conditions"), list):
                raise ConfigError(f"{path} is not a result of probe {name}; re-run mirrorhall probe {name}")
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

