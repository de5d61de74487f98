"""Probe ``mirror_test``: which agent is imitating me?

Agent 0 is a trait persona; exactly one other agent m is an ``Imitator`` of agent 0 (fidelity
drawn from the population's range, an own trait of the training split); all others are trait
personas. Two settings:

- ``crowd``: every trait (agent 0's, the others', the imitator's own) drawn from the training
  combinations; another agent may well like what agent 0 likes.
- ``decisive``: the classic mirror test, where the subject makes distinctive moves in front of the
  mirror: agent 0 is ``focused`` (the sharpest style) and no other agent, the imitator's own trait
  included, likes agent 0's colour. Everything else is as in ``crowd``.

After T observed steps each candidate j is scored by the model's own likelihoods: the
log-likelihood of j's actions when the model, in j's seat, is told "behave as agent 0", minus
when it is told "behave as yourself". The top-scoring agent is the answer.

Beside it: chance (1 / (N - 1)) and the Bayes reference, which compares for each j the marginal
likelihood of "j imitates agent 0" (``ImitatorObserver``: own trait and fidelity unknown) with
"j is a trait persona" (``BayesObserver``), the optimal identification for this population.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.bayes import BayesObserver, HypothesisSet, ImitatorObserver
from mirrorhall.agents.personas import Imitator, Trait
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import run_scene
from mirrorhall.analysis.common import ModelProbe, Scene, mean_ci
from mirrorhall.analysis.reporting import axes, errorbars, fmt_ci, save, target_line, verdict
from mirrorhall.envs.core import WorldConfig
from mirrorhall.errors import ConfigError

STEPS = (1, 2, 5, 10, 20, 40)
SETTINGS = ("crowd", "decisive")
TARGET_STEPS = 20  # the summary's and the targets' accuracies are after this many observed steps


def run(probe: ModelProbe, population: str, episodes: int = 40, seed: int = 0, agents: int = 8,
        steps=STEPS, settings=SETTINGS) -> dict:
    """Both settings on the same scene seeds; ``conditions`` has one row per (setting, steps)."""
    for setting in settings:
        if setting not in SETTINGS:
            raise ConfigError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
    probe.expect(len(settings) * (agents + 1))  # per setting: two passes of the model, one per candidate
    conditions = [row for setting in settings
                  for row in _identify(probe, population, episodes, seed, agents, steps, setting)]
    summary = {}
    for c in conditions:
        if c["steps_observed"] == TARGET_STEPS:
            summary[_key("accuracy_model", c["setting"])] = c["accuracy_model"]["mean"]
            summary[_key("accuracy_bayes", c["setting"])] = c["accuracy_bayes"]["mean"]
    return {"probe": "mirror_test", "population": population, "agents": agents, "episodes": episodes,
            "seed": seed, "settings": list(settings), "conditions": conditions, "summary": summary,
            "targets": {k: 0.9 for k in summary if k.startswith("accuracy_model")}}


def _key(figure: str, setting: str) -> str:
    """Summary and target key: ``accuracy_model_at_20`` (crowd), ``accuracy_model_at_20_decisive``."""
    return f"{figure}_at_{TARGET_STEPS}" + ("" if setting == "crowd" else f"_{setting}")


def _identify(probe: ModelProbe, population: str, episodes: int, seed: int, agents: int, steps,
              setting: str) -> list[dict]:
    """Accuracy of the model and of Bayes after each number of ``steps`` in one setting."""
    rng = streams.rng(streams.PROBE_DRAWS["mirror_test"], seed)
    pop = get_population(population)
    n_colors = probe.model.config.n_colors
    horizon = max(steps)
    world = WorldConfig(n_agents=agents, n_colors=n_colors, max_cycles=horizon + 1)
    train = [c for c in pop.combos(n_colors, "train") if c[1] != "follow"]
    belief_h = pop.hypotheses(n_colors, agents)
    own_h = HypothesisSet([Trait(*c) for c in train], n_colors, agents)
    rows, imitators = [], []
    subjects = train if setting == "crowd" else [c for c in train if c[2] == "focused"]
    for _ in range(episodes):
        own = subjects[rng.integers(len(subjects))]
        others = train if setting == "crowd" else [c for c in train if c[0] != own[0]]
        row = [Trait(*own)] + [Trait(*others[i]) for i in rng.integers(len(others), size=agents - 1)]
        m = int(rng.integers(1, agents))
        row[m] = Imitator(0, float(rng.uniform(*pop.fidelity)), Trait(*others[rng.integers(len(others))]))
        rows.append(row)
        imitators.append(m)
    scene = Scene.from_episode(run_scene(world, rows, horizon, streams.int_seed(streams.PROBE_SCENES["mirror_test"], seed, 0), hypotheses=belief_h))
    b, cands = episodes, np.arange(1, agents)
    acts = scene.episode.actions  # (T, B, N)

    # the model's log-likelihood ratio per (world, candidate, step)
    w = np.repeat(np.arange(b), cands.size * horizon)
    j = np.tile(np.repeat(cands, horizon), b)
    t = np.tile(np.arange(horizon), b * cands.size)
    as_zero = probe.query(scene, w, j, t, ["behave as agent 0"] * w.size)
    probe.tick()
    as_self = probe.query(scene, w, j, t, ["behave as yourself"] * w.size)
    probe.tick()
    a = acts[t, w, j]
    step_llr = (np.log(as_zero[np.arange(w.size), a]) - np.log(as_self[np.arange(w.size), a]))
    model_llr = np.cumsum(step_llr.reshape(b, cands.size, horizon), axis=-1)  # (B, J, T)

    # Bayes: imitator-of-0 evidence minus trait evidence for every candidate
    bayes_llr = np.zeros((b, cands.size, horizon))
    imit = ImitatorObserver(belief_h, own_h, fidelities=np.linspace(pop.fidelity[0], pop.fidelity[1], 5))
    trait = BayesObserver(own_h)
    for ci, c in enumerate(cands):
        ws, zeros, cs = np.arange(b), np.zeros(b, np.int64), np.full(b, c)
        tsits = [scene.situation(s, ws, zeros) for s in range(horizon)]
        isits = [scene.situation(s, ws, cs) for s in range(horizon)]
        ll = imit.log_likelihood(tsits, acts[:, :, 0], isits, acts[:, :, c])  # (T + 1, B, H', F)
        log_post = trait.prior((b,))
        for s in range(horizon):
            log_post = trait.update(log_post, isits[s], acts[s, :, c])
            bayes_llr[:, ci, s] = imit.log_evidence(ll[s + 1]) - trait.log_evidence(log_post)
        probe.tick()
    truth = np.asarray(imitators) - 1
    return [{"setting": setting, "steps_observed": n,
             "accuracy_model": mean_ci(model_llr[:, :, n - 1].argmax(1) == truth),
             "accuracy_bayes": mean_ci(bayes_llr[:, :, n - 1].argmax(1) == truth),
             "chance": 1.0 / cands.size} for n in steps]


def plot(result: dict, path: Path):
    """Identification accuracy of the model and of Bayes against steps observed, per setting, with
    95% intervals; chance, and the target accuracy after ``TARGET_STEPS`` steps as a dashed line."""
    fig, ax = axes()
    cond = result["conditions"]
    for setting, colour in zip(result.get("settings", ["crowd"]), ("C0", "C1"), strict=False):
        rows = [c for c in cond if c.get("setting", "crowd") == setting]
        xs = [c["steps_observed"] for c in rows]
        errorbars(ax, xs, rows, "accuracy_model", fmt="o-", color=colour, label=f"model, {setting}")
        errorbars(ax, xs, rows, "accuracy_bayes", fmt="s--", color=colour, label=f"Bayes, {setting}", alpha=0.7)
    ax.plot(xs, [c["chance"] for c in rows], ":", color="grey", label="chance")
    targets = {v for k, v in result.get("targets", {}).items() if k.startswith("accuracy_model")}
    if len(targets) == 1:
        value = targets.pop()
        target_line(ax, value, f"model accuracy >= {value:g} after {TARGET_STEPS} steps")
    ax.set_xscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.minorticks_off()
    ax.set_xlabel("steps observed")
    ax.set_ylabel("identification accuracy")
    ax.set_ylim(0, 1.05)
    return save(fig, ax, result, path)


def section(r: dict) -> list[str]:
    """The report's table and one verdict per setting against the result's own targets."""
    c, targets = r["conditions"], r.get("targets", {})
    rows = ["| setting | steps observed | model | Bayes | chance |", "|---|---|---|---|---|"]
    rows += [f"| {x.get('setting', 'crowd')} | {x['steps_observed']} | {fmt_ci(x['accuracy_model'])} | "
             f"{fmt_ci(x['accuracy_bayes'])} | {x['chance']:.3f} |" for x in c]
    at = {x.get("setting", "crowd"): x["accuracy_model"]["mean"] for x in c if x["steps_observed"] == TARGET_STEPS}
    verdicts = "; ".join(f"{setting} {verdict(at.get(setting), targets.get(_key('accuracy_model', setting)))}"
                         for setting in r.get("settings", ["crowd"]))
    return rows + ["", f"Target: accuracy with {r.get('agents')} agents after {TARGET_STEPS} steps: {verdicts}.", ""]
