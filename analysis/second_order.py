"""Probe ``second_order``: modelling being imitated.

A crowd scene (24 agents by default): agent theta is an ``Imitator`` of agent phi = 0 (a trait
persona). The model, in phi's seat after K steps, is told "pretend to be agent theta pretending
to be you". The truth is theta's exact action distribution in phi's situation (its belief about
phi at that step, its fidelity, its own trait). Baselines: SELF (assume perfect imitation: phi's
own distribution), OTHER(theta) (ignore the imitation: theta's own trait), and the Bayes
observer over theta's unknown own trait and fidelity (``ImitatorObserver``). Margins are paired
differences of cross-entropy per scene, with 95% bootstrap intervals.

The essay's own setting (``essay``): theta is a copy of the model prompted "behave as agent 0";
the truth is that copy's own distribution, with its memory, in phi's situation. There the
baselines are the model in phi's seat told "behave as yourself" (SELF) and "behave as agent
theta" (OTHER(theta)).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.bayes import HypothesisSet, ImitatorObserver
from mirrorhall.agents.cast import Cast, persona_probs, trait_probs
from mirrorhall.agents.personas import Imitator, Trait
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import run_scene
from mirrorhall.analysis.common import (
    ModelProbe,
    Scene,
    Wordings,
    cross_entropy,
    mean_ci,
    wording_text,
)
from mirrorhall.analysis.reporting import (
    axes,
    errorbars,
    fmt,
    fmt_ci,
    save,
    target_line,
    wordings_table,
)
from mirrorhall.envs.core import WorldConfig, WorldCore

KS = (5, 10, 20, 40)
PROMPT = "pretend to be agent {k} pretending to be you"
WORDINGS = Wordings("second_order", PROMPT, fills=("k",), needs=("k",))
"""``--prompt`` for this probe: ``{k}`` (required) is theta's id, the agent imitating phi."""
# targets: the lower end of each margin's 95% interval at K = 20 must lie above these (nats)
MARGIN_VS_SELF = 0.0
MARGIN_VS_OTHER = 0.0


def _scenes(pop, agents, n_colors, episodes, rng):
    train = [c for c in pop.combos(n_colors, "train") if c[1] != "follow"]
    rows, thetas = [], []
    for e in range(episodes):
        row = list(pop.sample_scene(agents, n_colors, rng, split="train"))
        row[0] = Trait(*train[rng.integers(len(train))])
        theta = 1 + e % (agents - 1)
        row[theta] = Imitator(0, float(rng.uniform(*pop.fidelity)), Trait(*train[rng.integers(len(train))]))
        rows.append(row)
        thetas.append(theta)
    return rows, np.asarray(thetas), HypothesisSet([Trait(*c) for c in train], n_colors, agents)


def _paired(a, b) -> dict:
    return mean_ci(np.asarray(a) - np.asarray(b))


def run(probe: ModelProbe, population: str, episodes: int = 48, seed: int = 0, agents: int = 24,
        ks=KS, essay: bool = True, prompts=()) -> dict:
    """``prompts``: wordings of the user's own (``{k}``: theta's id), each run on the same scenes as
    the canonical template (the result's ``prompts`` list: the margins at the summary's K); the
    essay setting keeps the canonical template."""
    wordings = WORDINGS.all(prompts)
    rng = streams.rng(streams.PROBE_DRAWS["second_order"], seed)
    pop = get_population(population)
    n_colors = probe.model.config.n_colors
    horizon = max(ks)
    size = 11 if agents <= 40 else 15
    world = WorldConfig(n_agents=agents, width=size, height=size, n_colors=n_colors, max_cycles=horizon + 1)
    rows, thetas, own_h = _scenes(pop, agents, n_colors, episodes, rng)
    belief_h = pop.hypotheses(n_colors, agents)
    cast = Cast(rows, world, belief_h)
    captured = {}
    scene = Scene.from_episode(run_scene(world, rows, horizon, streams.int_seed(streams.PROBE_SCENES["second_order"], seed, 0), hypotheses=belief_h,
                                         on_step=lambda t, s, c: captured.__setitem__(t, c.copy())))
    b = episodes
    w, zeros = np.arange(b), np.zeros(b, np.int64)
    acts = scene.episode.actions
    imit = ImitatorObserver(belief_h, own_h, fidelities=np.linspace(pop.fidelity[0], pop.fidelity[1], 5))
    tsits = [scene.situation(s, w, zeros) for s in range(horizon + 1)]
    isits = [scene.situation(s, w, thetas) for s in range(horizon + 1)]
    ll = imit.log_likelihood(tsits[:-1], acts[:, :, 0], isits[:-1], acts[:, w, thetas])  # (T + 1, B, H', F)
    phi_codes = HypothesisSet([r[0] for r in rows], n_colors, agents)
    theta_own = HypothesisSet([r[t].own for r, t in zip(rows, thetas, strict=True)], n_colors, agents)
    res = {k: {n: [] for n in ("model", "self", "other", "bayes")} for k in ks}
    worded = {k: [[] for _ in wordings[1:]] for k in ks}  # the user's wordings' cross-entropies
    probe.expect(len(ks) + (len(np.unique(thetas)) if essay else 0))
    for k in ks:
        sit = tsits[k]
        cstate = captured[k]
        truth = persona_probs(cast.params.take((w, thetas)), sit, cstate.log_belief[w, thetas], belief_h)
        model = probe.query(scene, w, zeros, np.full(b, k), [PROMPT.format(k=t) for t in thetas])
        self_b = trait_probs(sit, phi_codes.likes, phi_codes.social, phi_codes.beta)
        other_b = trait_probs(sit, theta_own.likes, theta_own.social, theta_own.beta)
        bayes = imit.predictive(ll[k], cstate.log_belief[w, thetas], sit)
        for name, p in (("model", model), ("self", self_b), ("other", other_b), ("bayes", bayes)):
            res[k][name] += cross_entropy(truth, p).tolist()
        for i, template in enumerate(wordings[1:]):
            p = probe.query(scene, w, zeros, np.full(b, k), [wording_text(template, target=t) for t in thetas])
            worded[k][i] += cross_entropy(truth, p).tolist()
        probe.tick()
    conditions = [{
        "K": k, **{f"ce_{n}": mean_ci(v) for n, v in res[k].items()},
        "margin_vs_self": _paired(res[k]["self"], res[k]["model"]),
        "margin_vs_other": _paired(res[k]["other"], res[k]["model"]),
        "gap_to_bayes": _paired(res[k]["model"], res[k]["bayes"]),
    } for k in ks]
    out = {"probe": "second_order", "population": population, "agents": agents, "episodes": episodes,
           "seed": seed, "prompt": PROMPT, "conditions": conditions}
    if essay:
        out["essay"] = _essay(probe, world, rows, thetas, seed, ks)
    k_ref = 20 if 20 in ks else ks[-1]
    ref = next(c for c in conditions if c["K"] == k_ref)
    out["summary"] = {"K": k_ref, "margin_vs_self": ref["margin_vs_self"]["mean"],
                      "margin_vs_self_ci95": ref["margin_vs_self"]["ci95"],
                      "margin_vs_other": ref["margin_vs_other"]["mean"],
                      "margin_vs_other_ci95": ref["margin_vs_other"]["ci95"]}
    out["prompts"] = [{"prompt": template, "K": k_ref,
                       "margin_vs_self": _paired(res[k_ref]["self"], ce),
                       "margin_vs_other": _paired(res[k_ref]["other"], ce)}
                      for template, ce in zip(wordings, [res[k_ref]["model"], *worded[k_ref]], strict=True)]
    out["targets"] = {"margin_vs_self": f"> {MARGIN_VS_SELF:g} with the interval above {MARGIN_VS_SELF:g}",
                      "margin_vs_other": f"> {MARGIN_VS_OTHER:g} with the interval above {MARGIN_VS_OTHER:g}"}
    return out


def _essay(probe: ModelProbe, world, rows, thetas, seed: int, ks) -> dict:
    """theta is a model copy told "behave as agent 0"; one batched scene per theta id (scenes 1, 2, ...)."""
    res = {k: {n: [] for n in ("model", "self", "other")} for k in ks}
    horizon = max(ks)
    core = WorldCore(world)
    for scene_index, theta in enumerate(np.unique(thetas), start=1):
        sel = np.flatnonzero(thetas == theta)
        sub = [list(rows[i]) for i in sel]
        for r in sub:
            r[theta] = Trait()  # placeholder: the model drives theta
        policy = probe.policy(core, [int(theta)])
        scene = Scene.from_episode(run_scene(world, sub, horizon, streams.int_seed(streams.PROBE_SCENES["second_order"], seed, scene_index) + int(theta),
                                             drivers=[policy.driver("behave as agent 0")]))
        b = len(sel)
        w, zeros, th = np.arange(b), np.zeros(b, np.int64), np.full(b, theta)
        for k in ks:
            t = np.full(b, k)
            truth = probe.query(scene, w, th, t, ["behave as agent 0"] * b, situation=zeros)
            for name, prompt in (("model", PROMPT.format(k=theta)), ("self", "behave as yourself"),
                                 ("other", f"behave as agent {theta}")):
                p = probe.query(scene, w, zeros, t, [prompt] * b)
                res[k][name] += cross_entropy(truth, p).tolist()
        probe.tick()
    return {"conditions": [{
        "K": k, **{f"ce_{n}": mean_ci(v) for n, v in res[k].items()},
        "margin_vs_self": _paired(res[k]["self"], res[k]["model"]),
        "margin_vs_other": _paired(res[k]["other"], res[k]["model"]),
    } for k in ks]}



def plot(result: dict, path: Path):
    """Left: cross-entropy under theta's true policy against K for the model, both baselines and
    Bayes. Right: the paired margins (baseline minus model) the target judges, with the target
    (the interval above 0) as a dashed line. All with 95% intervals."""
    fig, (left, right) = axes(2)
    cond = result["conditions"]
    ks = [c["K"] for c in cond]
    for key, label, style in (("ce_model", "model", "o-"), ("ce_self", "SELF baseline", "s--"),
                              ("ce_other", "OTHER(theta) baseline", "^--"), ("ce_bayes", "Bayes", "D:")):
        errorbars(left, ks, cond, key, fmt=style, label=label)
    left.set_xlabel("K, steps observed")
    left.set_ylabel("cross-entropy under theta's true policy (nats)")
    for key, label, style in (("margin_vs_self", "vs SELF", "o-"), ("margin_vs_other", "vs OTHER(theta)", "s-")):
        errorbars(right, ks, cond, key, fmt=style, label=label)
    if "essay" in result:
        ess = result["essay"]["conditions"]
        for key, label, style in (("margin_vs_self", "essay, vs SELF", "o:"), ("margin_vs_other", "essay, vs OTHER", "s:")):
            errorbars(right, [c["K"] for c in ess], ess, key, fmt=style, label=label, alpha=0.6)
    if result.get("targets"):
        target_line(right, MARGIN_VS_SELF if MARGIN_VS_SELF == MARGIN_VS_OTHER else None,
                    f"interval above {MARGIN_VS_SELF:g} at K={result.get('summary', {}).get('K')}")
    right.set_xlabel("K, steps observed")
    right.set_ylabel("margin: baseline CE - model CE (nats)")
    for ax in (left, right):
        ax.set_xticks(ks)
    return save(fig, [left, right], result, path)


def section(r: dict) -> list[str]:
    """The report's tables and verdict: both margins' intervals above ``MARGIN_VS_SELF`` and
    ``MARGIN_VS_OTHER`` (the JSON's ``targets`` state them in words)."""
    s, c = r.get("summary", {}), r["conditions"]
    rows = ["| K | model | SELF | OTHER(theta) | Bayes | margin vs SELF | margin vs OTHER |", "|---|---|---|---|---|---|---|"]
    rows += [f"| {x['K']} | {fmt_ci(x['ce_model'])} | {fmt_ci(x['ce_self'])} | {fmt_ci(x['ce_other'])} | {fmt_ci(x['ce_bayes'])} | {fmt_ci(x['margin_vs_self'])} | {fmt_ci(x['margin_vs_other'])} |" for x in c]
    if "essay" in r:
        rows += ["", "Essay setting (theta is a model copy told 'behave as agent 0'):", "",
                 "| K | model | SELF | OTHER(theta) | margin vs SELF | margin vs OTHER |", "|---|---|---|---|---|---|"]
        rows += [f"| {x['K']} | {fmt_ci(x['ce_model'])} | {fmt_ci(x['ce_self'])} | {fmt_ci(x['ce_other'])} | {fmt_ci(x['margin_vs_self'])} | {fmt_ci(x['margin_vs_other'])} |" for x in r["essay"]["conditions"]]
    lo_self = s.get("margin_vs_self_ci95", [None])[0]
    lo_other = s.get("margin_vs_other_ci95", [None])[0]
    met = (lo_self is not None and lo_self > MARGIN_VS_SELF and lo_other is not None and lo_other > MARGIN_VS_OTHER)
    bound = (f"{MARGIN_VS_SELF:g}" if MARGIN_VS_SELF == MARGIN_VS_OTHER
             else f"{MARGIN_VS_SELF:g} (SELF) and {MARGIN_VS_OTHER:g} (OTHER)")
    return rows + ["", f"Target (K={s.get('K')}): better than both baselines with intervals above {bound}: "
                       f"{'met' if met else 'MISSED'} "
                       f"(margin vs SELF {fmt(s.get('margin_vs_self'))}, vs OTHER {fmt(s.get('margin_vs_other'))}).", "",
                   *wordings_table(r, f"margin vs SELF at K={s.get('K')}", lambda e: e.get("margin_vs_self"))]
