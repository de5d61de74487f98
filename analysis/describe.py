"""Probe ``describe``: language -> behaviour.

In random situations of recorded scenes, the model is told "behave as a focused agent that likes
red gems and avoids others" (any trait combination) and scored against that persona's exact
distribution in the situation: KL = cross-entropy minus the persona's entropy (its floor).
Conditions: seen combinations with training paraphrases; held-out combinations (never in
training data) with training paraphrases; seen combinations with the held-out paraphrase.

Persona families: in a population with families (``lab-families``, ``lab-minus-<family>``) each
family adds a condition ``family:<name>``: personas drawn uniformly from its grid (a contrarian
never of the asked agent), described with the training paraphrases ("behave as a patrolling agent
that walks the loop ..."), each with the state it would have had living the asked agent's own
history (``agents.families.DescribedFamilies``, as hindsight labelling computes it). Each such
condition says how the population holds its family (``split``: seen in training, held out of it,
or absent from its mix) and which of its words the model does not know; ``families`` lists the
families of each split and ``family_pools`` pools each split's families, so held-out families
are reported apart from seen ones. ``targets`` = one family runs that family's condition alone.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.bayes import HypothesisSet
from mirrorhall.agents.cast import trait_probs
from mirrorhall.agents.families import DescribedFamilies, family_grid
from mirrorhall.agents.personas import FAMILIES, Trait
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
from mirrorhall.errors import ConfigError, InputWarning
from mirrorhall.imitation.model_io import unread_parts
from mirrorhall.imitation.prompts import CANONICAL, TEMPLATES, Kind, render

CONDITIONS = ("seen", "held_out_combination", "held_out_paraphrase")
"""The trait conditions; a population with persona families adds one condition per family,
``family:<name>``."""
FAMILY_SPLITS = ("seen", "held_out", "absent")
TARGETS = ("traits", *FAMILIES)
"""``--targets``: the trait conditions and the population's families, or one family alone."""
WORDINGS = Wordings("describe", CANONICAL[Kind.DESCRIBE], fills=("desc",), needs=("desc",))
"""``--prompt`` for this probe: ``{desc}`` (required) is the described persona ("a focused agent
that likes red gems and avoids others")."""


def run(probe: ModelProbe, population: str, episodes: int = 32, seed: int = 0, agents: int = 8,
        steps: int = 30, queries_per_episode: int = 24, prompts=(), targets: str = "traits") -> dict:
    """``prompts``: wordings of the user's own (``{desc}``: the persona), each asked in the same
    situations, of the same personas, as the ``seen`` condition (the result's ``prompts`` list:
    KL to the persona, the canonical "behave as {desc}" first). ``targets``: "traits" (the trait
    conditions, and one condition per persona family of the population), or one persona family
    (that family's condition only)."""
    if targets not in TARGETS:
        raise ConfigError(f"describe: unknown targets {targets!r}; allowed: {', '.join(TARGETS)}")
    if targets != "traits" and prompts:
        raise ConfigError(f"describe: wordings run on the seen trait combinations, which targets {targets!r} "
                          "leaves out; give one or the other")
    wordings = WORDINGS.all(prompts)
    rng = streams.rng(streams.PROBE_DRAWS["describe"], seed)
    pop = get_population(population)
    n_colors = probe.model.config.n_colors
    world = WorldConfig(n_agents=agents, n_colors=n_colors, max_cycles=steps)
    rows = [pop.sample_scene(agents, n_colors, rng, split="train", world=world) for _ in range(episodes)]
    scene = Scene.from_episode(run_scene(world, rows, steps, streams.int_seed(streams.PROBE_SCENES["describe"], seed, 0)))
    families = pop.families("all") if targets == "traits" else (targets,)
    trait_conditions = CONDITIONS if targets == "traits" else ()
    seen = [c for c in pop.combos(n_colors, "train") if c[1] != "follow"]
    held = [c for c in pop.combos(n_colors, "held_out") if c[1] != "follow"]
    train_t = [i for i, t in enumerate(TEMPLATES[Kind.DESCRIBE]) if not t.held_out]
    held_t = [i for i, t in enumerate(TEMPLATES[Kind.DESCRIBE]) if t.held_out]
    out, worded = {}, []
    probe.expect(len(trait_conditions) + len(families))
    for cond in trait_conditions:
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
    split = {fam: family_split(pop, fam) for fam in families}
    family_kl = {}
    for fam, entry in _family_conditions(probe, scene, world, families, rng, episodes, queries_per_episode, steps,
                                         train_t):
        out[f"family:{fam}"] = {"family": fam, "split": split[fam], **entry}
        family_kl[fam] = entry.pop("_kl")
        probe.tick()
    summary = {"kl_seen": out["seen"]["kl"]["mean"] if "seen" in out else None,
               "kl_held_out_combination": out.get("held_out_combination", {}).get("kl", {}).get("mean"),
               "kl_held_out_paraphrase": out.get("held_out_paraphrase", {}).get("kl", {}).get("mean")}
    pools = {}
    for which in FAMILY_SPLITS:  # the families of a split together: per episode, the mean over them
        kls = [family_kl[f] for f in families if split[f] == which]
        if kls:
            pools[which] = {"kl": mean_ci(np.mean(kls, axis=0)), "families": [f for f in families if split[f] == which]}
            summary[f"kl_families_{which}"] = pools[which]["kl"]["mean"]
    return {"probe": "describe", "population": population, "agents": agents, "episodes": episodes,
            "seed": seed, "describe_targets": targets,
            "families": {which: [f for f in families if split[f] == which] for which in FAMILY_SPLITS},
            "family_pools": pools,
            "conditions": [{"condition": k, **v} for k, v in out.items()],
            "summary": summary, "targets": {"kl_seen": 0.05} if trait_conditions else {}, "prompts": worded}


def family_split(pop, family: str) -> str:
    """How the population holds a persona family: "seen" (in its training split), "held_out" (one
    of its held-out families: never in training scenes or prompts) or "absent" (not in its mix)."""
    if family in pop.families("train"):
        return "seen"
    return "held_out" if family in pop.families("held_out") else "absent"


def _family_conditions(probe, scene, world, families, rng, episodes, queries_per_episode, steps, templates):
    """(family, condition entry) per family: DESCRIBE prompts naming personas drawn uniformly from
    its grid (a contrarian never of the asked agent), in random situations of the recorded scene,
    each persona with the state it would have had living the asked agent's own history
    (``DescribedFamilies``, as labelling computes it)."""
    if not families:
        return
    agents = world.n_agents
    grids = {fam: [family_grid(fam, world, agent=a) for a in range(agents)] for fam in families}
    specs = list(dict.fromkeys(s for fam in families for grid in grids[fam] for s in grid))
    index = {s: f for f, s in enumerate(specs)}
    q = episodes * queries_per_episode
    w = np.repeat(np.arange(episodes), queries_per_episode)
    draws = {}
    for fam in families:
        agent, t = rng.integers(agents, size=q), rng.integers(steps, size=q)
        named = [grids[fam][a][rng.integers(len(grids[fam][a]))] for a in agent]
        texts = [render(Kind.DESCRIBE, templates[rng.integers(len(templates))], trait=h).text for h in named]
        draws[fam] = (agent, t, np.array([index[h] for h in named]), texts)
    described = DescribedFamilies(specs, world, episodes)
    truth = {fam: np.zeros((q, 5)) for fam in families}
    for step in range(steps):  # every described persona lives every agent's history, step by step
        described.look(scene.states[step], step)
        for fam, (agent, t, f, _) in draws.items():
            sel = np.flatnonzero(t == step)
            if sel.size:
                truth[fam][sel] = described.probs(f[sel], w[sel], agent[sel], scene.situations[step], scene.states[step])
    for fam, (agent, t, _, texts) in draws.items():
        with warnings.catch_warnings():  # the words it does not know are reported in the result instead
            warnings.simplefilter("ignore", InputWarning)
            model = probe.query(scene, w, agent, t, texts)
        ce, floor = cross_entropy(truth[fam], model), entropy(truth[fam])
        unread = list(dict.fromkeys(u for text in texts for u in unread_parts(probe.tokenizer, text)[0]))
        kl = _per_episode(ce - floor, w, episodes)
        uniform = np.log(5) - floor  # KL of knowing nothing: the uniform distribution
        yield fam, {"kl": mean_ci(kl), "ce": mean_ci(_per_episode(ce, w, episodes)),
                    "entropy_floor": mean_ci(_per_episode(floor, w, episodes)),
                    "kl_uniform": mean_ci(_per_episode(uniform, w, episodes)), "queries": int(q),
                    "combinations": len({s for grid in grids[fam] for s in grid}), "example_prompt": texts[0],
                    "unread_words": unread, "_kl": kl}


def _per_episode(x: np.ndarray, world: np.ndarray, episodes: int) -> list[float]:
    """One value per episode, so intervals resample episodes rather than correlated queries."""
    return [float(x[world == e].mean()) for e in range(episodes)]


def plot(result: dict, path: Path):
    """KL to the described persona per condition, with 95% intervals (persona families coloured by
    how the population holds them); the target for seen combinations as a dashed line."""
    fig, ax = axes()
    cond = result["conditions"]
    labels = [c["condition"] + (f" ({c['split'].replace('_', ' ')})" if c.get("split") else "") for c in cond]
    colors = [SPLIT_COLORS.get(c.get("split"), "C0") for c in cond]
    ax.bar(labels, [mean_of(c, "kl") for c in cond], yerr=np.hstack([yerr(c, "kl") for c in cond]), capsize=4,
           color=colors, label="KL, 95% interval")
    if any(c.get("split") for c in cond):
        ax.tick_params(axis="x", labelrotation=30)
    bound = result.get("targets", {}).get("kl_seen")
    target_line(ax, bound, f"seen <= {bound:g} nats" if bound is not None else "")
    ax.set_ylabel("KL to the described persona (nats)")
    return save(fig, ax, result, path)


SPLIT_COLORS = {"seen": "C2", "held_out": "C3", "absent": "C7"}


def section(r: dict) -> list[str]:
    """The report's tables and verdict (a KL: at most the result's own target): the trait
    conditions, then the persona families, seen apart from held out."""
    s, c = r.get("summary", {}), r["conditions"]
    traits = [x for x in c if not x.get("family")]
    fams = [x for x in c if x.get("family")]
    rows = []
    if traits:
        rows += ["| condition | KL to persona | cross-entropy | entropy floor | queries |", "|---|---|---|---|---|"]
        rows += [f"| {x['condition']} | {fmt_ci(x['kl'])} | {fmt_ci(x['ce'])} | {fmt_ci(x['entropy_floor'])} | "
                 f"{x['queries']} |" for x in traits]
        bound = r.get("targets", {}).get("kl_seen")
        within = "close to the floor" if bound is None else f"within {bound} nats of the floor"
        rows += ["", f"Target: seen combinations {within} {verdict(s.get('kl_seen'), bound, higher=False)}.", ""]
    if fams:
        order = {which: i for i, which in enumerate(FAMILY_SPLITS)}
        fams = sorted(fams, key=lambda x: order.get(x.get("split"), len(order)))
        rows += ["Persona families: each described persona has the state it would have had living the asked "
                 "agent's own history; KL of uniform is the KL of knowing nothing (a uniform choice). Seen: in "
                 "the population's training split; held out: kept out of its training scenes and prompts; absent: "
                 "not in its mix.", "",
                 "| family | split | KL to persona | KL of uniform | cross-entropy | entropy floor | queries | "
                 "words the model does not know |", "|---|---|---|---|---|---|---|---|"]
        rows += [f"| {x['family']} | {x.get('split', '-').replace('_', ' ')} | {fmt_ci(x['kl'])} | "
                 f"{fmt_ci(x.get('kl_uniform') or {})} | {fmt_ci(x['ce'])} | {fmt_ci(x['entropy_floor'])} | {x['queries']} | "
                 f"{', '.join(x.get('unread_words') or []) or '-'} |" for x in fams]
        pools = r.get("family_pools") or {}
        covered = "; ".join(f"{which.replace('_', ' ')}: {', '.join(pool['families'])} (KL {fmt_ci(pool['kl'])})"
                            for which, pool in pools.items())
        rows += ["", f"Families covered: {covered}.", ""]
    return rows + wordings_table(r, "KL to the persona, seen combinations", lambda e: e.get("kl"))
