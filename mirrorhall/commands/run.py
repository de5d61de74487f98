"""``mirrorhall run``: one scene of scripted personas, a per-agent table, optionally an animation."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

from mirrorhall import streams
from mirrorhall.commands.common import check_output_file, check_path, undo_file_on_failure
from mirrorhall.commands.options import option
from mirrorhall.errors import ConfigError, user_input


def population_names() -> tuple[str, ...]:
    from mirrorhall.agents.populations import POPULATIONS

    return tuple(POPULATIONS)


@dataclass(frozen=True)
class RunConfig:
    """``mirrorhall run``: one rendered scene of scripted personas."""

    population: str = option("crowd", choices=population_names)
    """Registered population the personas are drawn from."""
    agents: int = 8
    """Number of agents in the scene."""
    steps: int = 100
    """Steps to run."""
    seed: int = 0
    """Seed of the personas, the world and the actions."""
    view_radius: int | None = None
    """Partial observability radius (None: full view)."""
    width: int = 11
    """Grid width in cells, outer walls included."""
    height: int = 11
    """Grid height in cells, outer walls included."""
    colors: int = 4
    """Number of gem colours."""
    render: str | None = option(None, metavar="OUT.gif")
    """Path of a .gif animation to write."""
    events: str | None = option(None, metavar="JSON")
    """Interventions: a JSON list of gem moves and swaps, e.g. '[{"step": 5, "kind": "swap", "gem": "red:0", "other": "blue:0"}]' (the env's spec card documents them)."""
    progress: bool = True
    """Show a progress bar on stderr."""
    world: object = field(init=False, repr=False, compare=False)
    """The ``WorldConfig`` the options describe (derived)."""
    schedule: tuple = field(init=False, repr=False, compare=False)
    """The checked events (derived from ``events``)."""

    def __post_init__(self):
        from mirrorhall.agents.populations import get_population
        from mirrorhall.envs.core import WorldConfig

        check_path("--render", self.render)
        if self.render is not None and not self.render.lower().endswith(".gif"):
            raise ConfigError(f"--render must name a .gif file, got {self.render!r}")
        with user_input():
            world = WorldConfig(n_agents=self.agents, width=self.width, height=self.height,
                                n_colors=self.colors, view_radius=self.view_radius,
                                max_cycles=max(self.steps, 1))
            get_population(self.population)
        from mirrorhall.envs.core import events_from_json

        with user_input():
            schedule = () if self.events is None else events_from_json(self.events, world, "--events")
        object.__setattr__(self, "world", world)
        object.__setattr__(self, "schedule", schedule)


def scene_personas(population: str, n_agents: int, n_colors: int, seed: int, split: str = "train",
                   world=None):
    """The personas of a scene drawn from a population; their generator is derived from ``seed``.
    ``world``: the scene's ``WorldConfig`` (family personas are drawn for its grid)."""
    from mirrorhall.agents.populations import get_population

    rng = streams.rng(streams.SCENE_PERSONAS, seed)
    return get_population(population).sample_scene(n_agents, n_colors, rng, split, world=world)


def run(cfg: RunConfig) -> int:
    from tqdm import tqdm

    from mirrorhall.agents.populations import get_population
    from mirrorhall.agents.scene import run_scene

    check_output_file("--render", cfg.render)
    world = cfg.world
    with user_input():
        personas = scene_personas(cfg.population, cfg.agents, cfg.colors, cfg.seed, world=world)
        hypotheses = get_population(cfg.population).hypotheses(cfg.colors, cfg.agents)
    frames = []
    bar = tqdm(total=cfg.steps, desc=f"{cfg.population} x{cfg.agents}", unit="step",
               disable=not cfg.progress, file=sys.stderr)

    def on_step(t, state, _):
        if cfg.render is not None:
            from mirrorhall.envs.render import render_rgb

            frames.append(render_rgb(world, state, events=cfg.schedule))
        if t:
            bar.update(1)

    with user_input():  # a move onto a cell that holds an agent or a gem is known only when it happens
        episode = run_scene(world, personas, cfg.steps, cfg.seed, hypotheses=hypotheses, on_step=on_step,
                            events=cfg.schedule or None)
    bar.close()
    print(summary_table(episode))
    if cfg.render is not None:
        from mirrorhall.envs.render import save_animation

        with undo_file_on_failure(cfg.render):
            save_animation(frames, cfg.render)
        print(f"animation: {cfg.render} ({len(frames)} frames)")
    return 0


def summary_table(episode, labels: dict[int, str] | None = None) -> str:
    """A per-agent table: persona, gems by colour, whom it imitates and how faithfully.

    ``labels`` replaces the description of model-driven agents.
    """
    labels = labels or {}
    cfg = episode.config
    letters = [c[0] for c in cfg.color_names]
    personas = episode.personas[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns: agents that imitate nobody
        match = np.nanmean(episode.match[:, 0], axis=0) if episode.steps else np.full(cfg.n_agents, np.nan)
    rows = [("agent", "persona", "gems (" + " ".join(letters) + ")", "imitates", "match", "belief")]
    for i, spec in enumerate(personas):
        gems = " ".join(str(int(x)) for x in episode.collected[0, i])
        target = None if i in labels else getattr(spec, "target", None)
        imit = "-" if target is None else (f"agent {target}" + (" (mirror)" if spec.kind == "mirror" else ""))
        m = match[i] if spec.kind == "imitator" and i not in labels else np.nan
        bel = np.nan if i in labels else episode.belief_on_target[0, i]
        rows.append((f"agent_{i}", labels.get(i, spec.describe()), gems, imit,
                     "-" if np.isnan(m) else f"{m:.2f}", "-" if np.isnan(bel) else f"{bel:.2f}"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(
        f"{episode.steps} steps, {int(episode.collected.sum())} gems collected. match: mean overlap "
        "sum_a min(p, q) of an imitator's action distribution p with its target's q in the "
        "imitator's situation (1 = identical); belief: final posterior mass on the target's true persona."
    )
    return "\n".join(lines)
