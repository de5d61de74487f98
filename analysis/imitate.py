"""Probe ``imitate``: after watching agent k for K steps, can the model behave as k?

The model drives agent 0 as itself ("behave as yourself") beside a trait persona pi_test at
agent k; after K steps it is asked "behave as agent k". Its action distribution is scored by the
exact expected cross-entropy under pi_test's own distribution in agent 0's situation, beside the
Bayes-optimal observer (posterior over the population's trait hypotheses from k's K observed
(situation, action) pairs; k starts at a persona-independent random cell, so this ceiling is
exact) and the prior-only observer. Fraction of attainable information:
(CE_prior - CE_model) / (CE_prior - CE_bayes).

Closed loop: the same scenes are run again with the prompt switched to "behave as agent k" at step
10; over the remaining steps, the share of gems of pi_test's liked colour and the distance to the
nearest other agent are compared between the model-as-k, pi_test itself, and the model as itself.

``targets``: "traits" (the default, above), or a persona family (``agents/families.py``): pi_test is
then drawn uniformly from that family's parameter grid, its truth is the cast's own counterfactual
query (pi_test with its state, in agent 0's situation), and the Bayes observer and the prior are
the family's (``FamilyObserver``: the posterior over the grid, and the prior over it, each
hypothesis with the state it would have from what the observer saw). No closed loop for families.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.bayes import (
    BayesObserver,
    FamilyHypotheses,
    FamilyObserver,
    HypothesisSet,
    situation_of,
)
from mirrorhall.agents.cast import trait_probs
from mirrorhall.agents.families import family_grid
from mirrorhall.agents.personas import FAMILIES, Trait
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import run_scene
from mirrorhall.analysis.common import (
    ModelProbe,
    Scene,
    Wordings,
    cross_entropy,
    excess_tail,
    fraction_ci,
    mean_ci,
    wording_text,
)
from mirrorhall.analysis.reporting import (
    axes,
    errorbars,
    fmt_ci,
    save,
    target_line,
    verdict,
    wordings_table,
)
from mirrorhall.envs.core import WorldConfig, WorldCore

KS = (0, 1, 2, 5, 10, 20, 40)
SWITCH = 10
WORDINGS = Wordings("imitate", "behave as agent {k}", fills=("k",), needs=("k",))
"""``--prompt`` for this probe: ``{k}`` (required) is the watched agent's id."""
TARGETS = ("traits", *FAMILIES)
"""What pi_test is drawn from: the population's trait personas, or one persona family."""


def scenes_with_trait_targets(population: str, agents: int, n_colors: int, episodes: int, rng,
                              trait_seat: bool = False):
    """Per target k: rows of personas where agent k is a trait persona of the training split;
    with ``trait_seat`` agent 0 too (drawn after k's, so the other rows are unchanged)."""
    pop = get_population(population)
    train = [c for c in pop.combos(n_colors, "train") if c[1] != "follow"]
    groups: dict[int, list] = {}
    for e in range(episodes):
        k = 1 + e % (agents - 1)
        row = list(pop.sample_scene(agents, n_colors, rng, split="train"))
        if not isinstance(row[k], Trait) or row[k].social == "follow":
            row[k] = Trait(*train[rng.integers(len(train))])
        if trait_seat and (not isinstance(row[0], Trait) or row[0].social == "follow"):
            row[0] = Trait(*train[rng.integers(len(train))])
        groups.setdefault(k, []).append(row)
    return groups, HypothesisSet([Trait(*c) for c in train], n_colors, agents)


@dataclass
class WatchedScene:
    """One batch of B worlds where agent ``k`` (a trait persona in every world) is watched."""

    k: int
    rows: list  # (B,) rows of N persona specs
    seed: int
    scene: Scene
    codes: HypothesisSet  # (B,) agent k's own trait in each world, as codes


def watched_scenes(probe: ModelProbe, name: str, population: str, episodes: int, seed: int, agents: int,
                   steps: int, driven: bool = True, trait_seat: bool = False):
    """The probe ``name``'s scenes, one batch per target id k (its streams: ``PROBE_DRAWS[name]``
    for the personas, ``PROBE_SCENES[name]`` for each batch), and the training hypotheses.

    With ``driven`` the model drives agent 0 as itself ("behave as yourself"); otherwise every
    agent is its scripted persona. Yields ``WatchedScene``s lazily, so each is scored and dropped.
    """
    rng = streams.rng(streams.PROBE_DRAWS[name], seed)
    n_colors = probe.model.config.n_colors
    world = WorldConfig(n_agents=agents, n_colors=n_colors, max_cycles=steps + 1)
    groups, hyp = scenes_with_trait_targets(population, agents, n_colors, episodes, rng, trait_seat=trait_seat)
    core = WorldCore(world)

    def scenes():
        for scene_index, (k, rows) in enumerate(sorted(groups.items())):
            drivers = [probe.policy(core, [0]).driver()] if driven else []
            scene_seed = streams.int_seed(streams.PROBE_SCENES[name], seed, scene_index) + k
            scene = Scene.from_episode(run_scene(world, rows, steps, scene_seed, drivers=drivers))
            yield WatchedScene(k, rows, scene_seed, scene, HypothesisSet([r[k] for r in rows], n_colors, agents))

    return world, groups, hyp, scenes()


def score_watched(probe: ModelProbe, ws: WatchedScene, observer: BayesObserver, seat: str, ks, wordings,
                  ce: dict) -> None:
    """Append to ``ce[K]`` the exact cross-entropies under agent k's own policy, in the situation of
    ``seat`` ("ego": agent 0; "target": agent k itself), at each K in ``ks``: of the model under
    each wording (``ce[K]["model"][i]``, ``{k}`` filled with k), the Bayes observer of k's first K
    (situation, action) pairs and the prior-only observer."""
    scene, k = ws.scene, ws.k
    b = len(ws.rows)
    w = np.arange(b)
    at = np.zeros(b, np.int64) if seat == "ego" else np.full(b, k)
    log_post = observer.prior((b,))
    for t in range(max(ks) + 1):
        if t in ks:
            sit = scene.situation(t, w, at)
            truth = trait_probs(sit, ws.codes.likes, ws.codes.social, ws.codes.beta)  # (B, 5)
            for i, template in enumerate(wordings):
                model = probe.query(scene, w, at, np.full(b, t), [wording_text(template, target=k)] * b)
                ce[t]["model"][i] += cross_entropy(truth, model).tolist()
            ce[t]["bayes"] += cross_entropy(truth, observer.predictive(log_post, sit)).tolist()
            ce[t]["prior"] += cross_entropy(truth, observer.predictive(observer.prior((b,)), sit)).tolist()
        if t < max(ks):
            log_post = observer.update(log_post, scene.situation(t, w, np.full(b, k)), scene.episode.actions[t, :, k])


def new_tally(ks, wordings) -> dict:
    """``score_watched``'s accumulator: per K, the model's lists (one per wording), Bayes and prior."""
    return {t: {"model": [[] for _ in wordings], "bayes": [], "prior": []} for t in ks}


def fraction_conditions(ce: dict, ks, wording: int = 0) -> list[dict]:
    """One row per K: the cross-entropies of wording ``wording``, Bayes and the prior, and the
    fraction of attainable information (none at K = 0, where nothing has been observed)."""
    rows = []
    for t in ks:
        c = ce[t]
        model = c["model"][wording]
        rows.append({"K": t, "ce_model": mean_ci(model), "ce_bayes": mean_ci(c["bayes"]), "ce_prior": mean_ci(c["prior"]),
                     "fraction": fraction_ci(c["prior"], model, c["bayes"]) if t > 0
                     else {"mean": None, "ci95": [None, None], "n": len(model)},
                     "tail": excess_tail(c["prior"], model, c["bayes"]) if t > 0 else None})
    return rows


def wording_fractions(ce: dict, ks, wordings) -> list[dict]:
    """The ``prompts`` list of a result: per wording its template and the fraction at every K > 0."""
    out = []
    for i, template in enumerate(wordings):
        rows = fraction_conditions(ce, [t for t in ks if t > 0], i)
        out.append({"prompt": template, "fraction": {str(r["K"]): r["fraction"] for r in rows}})
    return out


def run(probe: ModelProbe, population: str, episodes: int = 70, seed: int = 0, agents: int = 8,
        ks=KS, closed_loop: bool = True, prompts=(), targets: str = "traits") -> dict:
    """``prompts``: wordings of the user's own (``{k}``: the target's id), each run on the same
    scenes as the canonical "behave as agent {k}" (the result's ``prompts`` list). ``targets``:
    "traits", or a persona family (``run_family``)."""
    if targets != "traits":
        return run_family(probe, population, targets, episodes=episodes, seed=seed, agents=agents, ks=ks,
                          prompts=prompts)
    wordings = WORDINGS.all(prompts)
    steps = max(ks)
    world, groups, hyp, scenes = watched_scenes(probe, "imitate", population, episodes, seed, agents, steps)
    observer = BayesObserver(hyp)
    ce = new_tally(ks, wordings)
    loop = {"model_as_k_share": [], "k_share": [], "model_self_share": [],
            "model_as_k_near": [], "k_near": [], "model_self_near": []}
    probe.expect(len(groups) * (2 if closed_loop else 1))
    for ws in scenes:
        score_watched(probe, ws, observer, "ego", ks, wordings, ce)
        probe.tick()
        if closed_loop:
            _closed_loop(probe, world, ws.rows, ws.k, ws.seed, ws.scene, [r[ws.k] for r in ws.rows], loop)
            probe.tick()
    conditions = fraction_conditions(ce, ks)
    return {
        "probe": "imitate", "population": population, "agents": agents, "episodes": episodes, "seed": seed,
        "prompt": WORDINGS.canonical, "hypotheses": len(hyp),
        "conditions": conditions,
        "closed_loop": {name: mean_ci(v) for name, v in loop.items()} | {"switch_at": SWITCH, "steps": steps},
        "summary": _summary(conditions, ks),
        "targets": {"fraction_at_K10": 0.9, "mean_fraction_K_ge_5": 0.8},
        "prompts": wording_fractions(ce, ks, wordings),
    }


def _summary(conditions: list[dict], ks) -> dict:
    frac = {c["K"]: c["fraction"]["mean"] for c in conditions}
    over5 = [frac[t] for t in ks if t >= 5 and frac[t] is not None]
    return {"fraction_at_K10": frac.get(10), "fraction_at_K20": frac.get(20),
            "mean_fraction_K_ge_5": float(np.mean(over5)) if over5 else None}


def scenes_with_family_targets(population: str, family: str, world: WorldConfig, episodes: int, rng):
    """Per target k: rows of personas (the population's training split) where agent k is a persona
    of ``family``, drawn uniformly from its grid."""
    pop = get_population(population)
    agents, groups = world.n_agents, {}
    for e in range(episodes):
        k = 1 + e % (agents - 1)
        row = list(pop.sample_scene(agents, world.n_colors, rng, split="train", world=world))
        grid = family_grid(family, world, agent=k)
        row[k] = grid[rng.integers(len(grid))]
        groups.setdefault(k, []).append(row)
    return groups


def run_family(probe: ModelProbe, population: str, family: str, episodes: int = 70, seed: int = 0,
               agents: int = 8, ks=KS, prompts=()) -> dict:
    """The imitate probe with pi_test drawn from ``family``, scored against the family's exact Bayes
    observer and its prior (see the module docstring)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown targets {family!r}; allowed: {', '.join(TARGETS)}")
    rng = streams.rng(streams.PROBE_DRAWS["imitate"], seed)
    steps = max(ks)
    # one step more than asked for: the truth at K = steps comes from the cast at that step
    world = WorldConfig(n_agents=agents, n_colors=probe.model.config.n_colors, max_cycles=steps + 2)
    groups = scenes_with_family_targets(population, family, world, episodes, rng)
    wordings = WORDINGS.all(prompts)
    ce = new_tally(ks, wordings)
    core = WorldCore(world)
    probe.expect(len(groups))
    sizes = set()
    for scene_index, (k, rows) in enumerate(sorted(groups.items())):
        b = len(rows)
        w, ego, target = np.arange(b), np.zeros(b, np.int64), np.full(b, k)
        truth = {}

        def on_act(step, k=k, b=b, truth=truth):
            if step.t in ks:  # pi_test with its own state, in agent 0's situation
                truth[step.t] = step.cast.probs_as(np.full((b, 1), k), step.situations, step.cast_state,
                                                   situation=np.zeros((b, 1), np.int64))[:, 0]

        policy = probe.policy(core, [0])
        scene_seed = streams.int_seed(streams.PROBE_SCENES["imitate"], seed, scene_index) + k
        scene = Scene.from_episode(run_scene(world, rows, steps + 1, scene_seed, drivers=[policy.driver()],
                                             on_act=on_act))
        observer = FamilyObserver(FamilyHypotheses.grid(family, world, agent=k))
        sizes.add(len(observer.hypotheses))
        belief = observer.prior(b)
        for t in range(steps + 1):
            now = scene.states[t]
            belief = observer.look(belief, core, now)
            if t in ks:
                seat = situation_of(core, now, ego)
                for i, template in enumerate(wordings):
                    model = probe.query(scene, w, ego, np.full(b, t), [wording_text(template, target=k)] * b)
                    ce[t]["model"][i] += cross_entropy(truth[t], model).tolist()
                ce[t]["bayes"] += cross_entropy(truth[t], observer.predictive(belief, *seat)).tolist()
                ce[t]["prior"] += cross_entropy(truth[t], observer.predictive(belief, *seat, prior=True)).tolist()
            if t < steps:
                belief = observer.update(belief, *situation_of(core, now, target), scene.episode.actions[t, :, k])
        probe.tick()
    conditions = fraction_conditions(ce, ks)
    return {
        "probe": "imitate", "population": population, "agents": agents, "episodes": episodes, "seed": seed,
        "pi_test": family, "prompt": WORDINGS.canonical, "hypotheses": max(sizes),
        "conditions": conditions,
        "summary": _summary(conditions, ks),
        "targets": {"fraction_at_K10": 0.9, "mean_fraction_K_ge_5": 0.8},
        "prompts": wording_fractions(ce, ks, wordings),
    }




def _closed_loop(probe, world, rows, k, scene_seed, self_scene, targets, out) -> None:
    """Switch agent 0 to "behave as agent k" at step SWITCH and compare behaviour statistics."""
    policy = probe.policy(WorldCore(world), [0])
    marks = {}

    def on_step(t, state, _):
        if t in (SWITCH, world.max_cycles - 1):
            marks[t] = state.collected.copy()

    steps = world.max_cycles - 1
    ep = run_scene(world, rows, steps, scene_seed, on_step=on_step,
                   drivers=[policy.driver(schedule={SWITCH: {0: f"behave as agent {k}"}})])
    as_k = Scene.from_episode(ep)
    gained = marks[steps] - marks[SWITCH]  # (B, N, C)
    own = self_scene.episode  # the same scenes, agent 0 as itself throughout
    names = world.color_names
    for b, trait in enumerate(targets):
        if trait.likes != "none":
            c = names.index(trait.likes)
            out["model_as_k_share"].append(_share(gained[b, 0], c))
            out["k_share"].append(_share(gained[b, k], c))
            out["model_self_share"].append(_share(_gains(own, b, SWITCH, steps), c))
        out["model_as_k_near"].append(_mean_nearest(as_k, b, 0, SWITCH))
        out["k_near"].append(_mean_nearest(as_k, b, k, SWITCH))
        out["model_self_near"].append(_mean_nearest(self_scene, b, 0, SWITCH))


def _share(gems: np.ndarray, color: int) -> float:
    return float(gems[color] / gems.sum()) if gems.sum() else np.nan


def _gains(ep, b: int, start: int, end: int) -> np.ndarray:
    """(C,) gems agent 0 collected in world b between steps start and end, rebuilt from positions."""
    n = ep.agent_pos.shape[2]
    g_color = np.repeat(np.arange(ep.config.n_colors), ep.config.gems_per_color)
    out = np.zeros(ep.config.n_colors)
    for t in range(start, end):
        for g, cell in enumerate(ep.gem_pos[t, b]):
            on = [i for i in range(n) if (ep.agent_pos[t + 1, b, i] == cell).all()]
            if on and min(on, key=lambda i: (i - t) % n) == 0:
                out[g_color[g]] += 1
    return out


def _mean_nearest(scene: Scene, b: int, agent: int, start: int) -> float:
    pos = scene.episode.agent_pos[start:, b]  # (T', N, 2)
    d = np.abs(pos[:, agent:agent + 1] - pos).sum(-1).astype(float)  # (T', N)
    d[:, agent] = np.inf
    return float(d.min(1).mean())


def plot(result: dict, path: Path):
    """Left: cross-entropy of the model, Bayes and the prior against K. Right: the fraction of
    attainable information the targets judge, with the targets as dashed lines. All with 95%
    intervals."""
    fig, (left, right) = axes(2)
    cond = result["conditions"]
    ks = [c["K"] for c in cond]
    for key, label, style in (("ce_model", "model", "o-"), ("ce_bayes", "Bayes", "s--"), ("ce_prior", "prior only", "^:")):
        errorbars(left, ks, cond, key, fmt=style, label=label)
    left.set_ylabel("cross-entropy under pi_test (nats)")
    frac = [c for c in cond if c["K"] > 0]
    errorbars(right, [c["K"] for c in frac], frac, "fraction", fmt="o-", label="model")
    targets = result.get("targets", {})
    if targets.get("mean_fraction_K_ge_5") is not None:
        target_line(right, targets["mean_fraction_K_ge_5"], f"mean over K >= 5 >= {targets['mean_fraction_K_ge_5']:g}")
    if targets.get("fraction_at_K10") is not None:
        right.plot([10], [targets["fraction_at_K10"]], marker="_", markersize=18, markeredgewidth=2.5,
                   linestyle="none", color="crimson", label=f"target: at K=10 >= {targets['fraction_at_K10']:g}")
    right.axhline(1.0, color="grey", linestyle=":", linewidth=1, label="Bayes (1 by definition)")
    right.set_ylabel("fraction of attainable information")
    for ax, shown in ((left, ks), (right, [c["K"] for c in frac])):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(shown, [str(k) for k in shown])
        ax.minorticks_off()
        ax.set_xlabel("K, steps observed before 'behave as agent k'")
    return save(fig, [left, right], result, path)


def tail_lines(conditions: list[dict], k: int = 10) -> list[str]:
    """A sentence on how much of the shortfall at K = ``k`` its worst scenes hold (``excess_tail``)."""
    row = next((c for c in conditions if c.get("K") == k), {})
    tail = row.get("tail")
    if not tail or tail.get("share_of_excess") is None or tail.get("fraction_without") is None:
        return []
    return [f"At K={k} the worst {tail['worst']} of {row['fraction'].get('n')} scenes hold {tail['share_of_excess']:.0%} of the model's "
            f"cross-entropy above Bayes, summed where it trails (the largest {tail['excess_ce'][0]:.2f} nats); "
            f"without them the fraction reads {tail['fraction_without']:.3f}.", ""]


def section(r: dict) -> list[str]:
    """The report's table and verdicts; the targets are the result's own."""
    s, c, targets = r.get("summary", {}), r["conditions"], r.get("targets", {})
    rows = ["| K | model | Bayes | prior | fraction of attainable information |", "|---|---|---|---|---|"]
    rows += [f"| {x['K']} | {fmt_ci(x['ce_model'])} | {fmt_ci(x['ce_bayes'])} | {fmt_ci(x['ce_prior'])} | {fmt_ci(x['fraction'])} |" for x in c]
    cl = r.get("closed_loop", {})
    rows += ["", f"Targets: fraction at K=10 {verdict(s.get('fraction_at_K10'), targets.get('fraction_at_K10'))}; "
                 f"mean over K>=5 {verdict(s.get('mean_fraction_K_ge_5'), targets.get('mean_fraction_K_ge_5'))}.", ""]
    rows += tail_lines(c)
    if r.get("pi_test") not in (None, "traits"):
        return rows + [f"pi_test: the {r['pi_test']} family ({r.get('hypotheses')} hypotheses), scored against that "
                       "family's exact Bayes observer and prior; no closed loop.", ""] + \
            wordings_table(r, "fraction at K=10", lambda e: e["fraction"].get("10"))
    rows += [f"Closed loop (prompt switched at step {cl.get('switch_at')}): share of pi_test's liked colour "
             f"among gems collected: model as k {fmt_ci(cl.get('model_as_k_share', {}))}, pi_test itself "
             f"{fmt_ci(cl.get('k_share', {}))}, model as itself {fmt_ci(cl.get('model_self_share', {}))}. Mean distance "
             f"to the nearest agent: model as k {fmt_ci(cl.get('model_as_k_near', {}))}, pi_test "
             f"{fmt_ci(cl.get('k_near', {}))}, model as itself {fmt_ci(cl.get('model_self_near', {}))}.", ""]
    return rows + wordings_table(r, "fraction at K=10", lambda e: e["fraction"].get("10"))
