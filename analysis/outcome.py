"""Probe ``outcome``: outcome-conditioned prompts in closed loop.

The model drives agent 0 with "collect n <colour> gems in the next H steps" from the first step;
over those H steps, the gems of that colour it actually collects are counted, beside the same
scenes with the model told "behave as yourself" (the control). A model that follows RETURN
prompts collects more of the asked colour as n grows and more than the control for n > 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import run_scene
from mirrorhall.analysis.common import ModelProbe, Wordings, mean_ci, slope_ci, wording_text
from mirrorhall.analysis.reporting import axes, errorbars, fmt, fmt_ci, save, wordings_table
from mirrorhall.envs.core import WorldConfig, WorldCore
from mirrorhall.imitation.prompts import CANONICAL, Kind

ASKED = (0, 1, 2, 3, 4)
HORIZON = 20
WORDINGS = Wordings("outcome", CANONICAL[Kind.RETURN], fills=("n", "what", "horizon"), needs=("n", "what"))
"""``--prompt`` for this probe: ``{n}`` the gems asked for and ``{what}`` their colour and noun ("red
gems") are required; ``{horizon}`` (the steps allowed) is optional."""


def run(probe: ModelProbe, population: str, episodes: int = 40, seed: int = 0, agents: int = 8,
        asked=ASKED, horizon: int = HORIZON, prompts=()) -> dict:
    """``episodes`` scenes per asked number, the colour cycling over the world's colours.

    ``prompts``: wordings of the user's own, each run in closed loop on the same scenes (same
    personas, same scene seeds) as the canonical template (the result's ``prompts`` list: the
    slope of gems collected per gem asked, with its interval)."""
    wordings = WORDINGS.all(prompts)
    rng = streams.rng(streams.PROBE_DRAWS["outcome"], seed)
    pop = get_population(population)
    n_colors = probe.model.config.n_colors
    world = WorldConfig(n_agents=agents, n_colors=n_colors, max_cycles=horizon)
    core = WorldCore(world)
    names = world.color_names
    conditions, worded = [], [[] for _ in wordings]  # worded[i][a]: wording i's gems at asked[a]
    probe.expect(len(asked) * n_colors)
    for a, n in enumerate(asked):
        got, control = [], []
        for lists in worded:
            lists.append([])
        for c in range(n_colors):
            per = max(1, episodes // n_colors)
            rows = [pop.sample_scene(agents, n_colors, rng, split="train") for _ in range(per)]
            scene_seed = streams.int_seed(streams.PROBE_SCENES["outcome"], seed, a * n_colors + c)
            for prompt, out in ((wording_text(WORDINGS.canonical, outcome=(n, names[c], horizon)), got),
                                ("behave as yourself", control)):
                ep = run_scene(world, rows, horizon, scene_seed, drivers=[probe.policy(core, [0]).driver(prompt)])
                out += ep.collected[:, 0, c].tolist()
            for i, template in enumerate(wordings[1:], start=1):
                prompt = wording_text(template, outcome=(n, names[c], horizon))
                ep = run_scene(world, rows, horizon, scene_seed, drivers=[probe.policy(core, [0]).driver(prompt)])
                worded[i][a] += ep.collected[:, 0, c].tolist()
            probe.tick()
        worded[0][a] = got
        conditions.append({"asked": n, "achieved": mean_ci(got), "control": mean_ci(control),
                           "difference": mean_ci(np.asarray(got) - np.asarray(control))})
    achieved = [c["achieved"]["mean"] for c in conditions]
    slope = float(np.polyfit(list(asked), achieved, 1)[0]) if len(asked) > 1 else None
    return {"probe": "outcome", "population": population, "agents": agents, "episodes": episodes,
            "seed": seed, "horizon": horizon, "conditions": conditions,
            "summary": {"slope_achieved_per_asked": slope},
            "prompts": [{"prompt": template, "slope": slope_ci(asked, per_asked)}
                        for template, per_asked in zip(wordings, worded, strict=True)]}


def plot(result: dict, path: Path):
    """Gems of the asked colour collected against the number asked, beside the control, with 95%
    intervals; the dotted diagonal is "collected exactly as asked" (this probe sets no target)."""
    fig, ax = axes()
    cond = result["conditions"]
    xs = [c["asked"] for c in cond]
    errorbars(ax, xs, cond, "achieved", fmt="o-", label="asked")
    errorbars(ax, xs, cond, "control", fmt="s--", label="'behave as yourself'")
    if xs:
        ax.plot([min(xs), max(xs)], [min(xs), max(xs)], ":", color="grey", label="collected = asked")
    ax.set_xticks(range(min(xs, default=0), max(xs, default=0) + 1))
    ax.set_xlabel("gems of the colour asked for")
    ax.set_ylabel(f"gems of that colour collected in {result.get('horizon')} steps")
    return save(fig, ax, result, path)


def section(r: dict) -> list[str]:
    """The report's table and the slope (this probe sets no target)."""
    s, c = r.get("summary", {}), r["conditions"]
    rows = ["| asked | achieved | control (behave as yourself) | difference |", "|---|---|---|---|"]
    rows += [f"| {x['asked']} | {fmt_ci(x['achieved'])} | {fmt_ci(x['control'])} | {fmt_ci(x['difference'])} |" for x in c]
    return rows + ["", f"Slope of achieved per asked gem: {fmt(s.get('slope_achieved_per_asked'))}.", "",
                   *wordings_table(r, "slope of gems collected per gem asked", lambda e: e.get("slope"))]
