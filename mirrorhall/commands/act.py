"""``mirrorhall act``: a scene where chosen agents are driven by a trained model."""

from __future__ import annotations

import re
import sys
import warnings
from dataclasses import dataclass, field

from mirrorhall.commands.common import (
    check_output_file,
    check_path,
    set_threads,
    undo_file_on_failure,
)
from mirrorhall.commands.options import option
from mirrorhall.commands.run import population_names, scene_personas, summary_table
from mirrorhall.errors import ConfigError, InputWarning, user_input


@dataclass(frozen=True)
class ActConfig:
    """``mirrorhall act``: which agents the model drives, with which prompts, in which scene."""

    checkpoint: str
    """Checkpoint or training run folder."""
    population: str = option("crowd", choices=population_names)
    """Registered population the scripted agents are drawn from."""
    agents: int = 8
    """Number of agents in the scene."""
    steps: int = 60
    """Steps to run."""
    seed: int = 0
    """Seed of the personas, the world and the actions."""
    view_radius: int | None = None
    """Partial observability radius (None: full view)."""
    prompt: tuple[str, ...] = option((), metavar="agent_I=TEXT")
    """Drive agent I by the model with this prompt (repeatable; at least one)."""
    switch: tuple[str, ...] = option((), metavar="STEP:agent_I=TEXT")
    """Change agent I's prompt before step STEP (repeatable)."""
    render: str | None = option(None, metavar="OUT.gif")
    """Path of a .gif animation to write."""
    threads: int = 0
    """torch threads (0: leave torch's default)."""
    progress: bool = True
    """Show a progress bar on stderr."""
    prompts: dict = field(init=False, repr=False, compare=False)
    """{driven agent: its first prompt} (derived from ``prompt``)."""
    schedule: dict = field(init=False, repr=False, compare=False)
    """{step: {driven agent: its new prompt}} (derived from ``switch``)."""

    def __post_init__(self):
        from mirrorhall.agents.populations import get_population

        if not self.prompt:
            raise ConfigError("name at least one model-driven agent with --prompt 'agent_0=behave as yourself'")
        check_path("--checkpoint", self.checkpoint)
        check_path("--render", self.render)
        if self.render is not None and not self.render.lower().endswith(".gif"):
            raise ConfigError(f"--render must name a .gif file, got {self.render!r}")
        with user_input():
            get_population(self.population)
        prompts: dict[int, str] = {}
        for text in self.prompt:
            agent, prompt = parse_assignment(text, self.agents, "--prompt")
            if agent in prompts:
                raise ConfigError(f"--prompt names agent_{agent} twice ({prompts[agent]!r} and {prompt!r}); "
                                  f"give one --prompt per agent and change it later with --switch STEP:agent_{agent}=...")
            prompts[agent] = prompt
        schedule: dict[int, dict[int, str]] = {}
        for text in self.switch:
            step, _, rest = text.partition(":")
            if not step.strip().isascii() or not step.strip().isdigit():
                raise ConfigError(f"--switch must look like '20:agent_2=behave as agent 5', got {text!r}")
            agent, prompt = parse_assignment(rest, self.agents, "--switch")
            if agent not in prompts:
                raise ConfigError(f"--switch names agent_{agent}, which has no --prompt "
                                  "(only model-driven agents switch)")
            at = int(step)
            if not 1 <= at < self.steps:
                raise ConfigError(f"--switch {text!r}: step {at} is not in the scene; a switch takes effect "
                                  f"before a step in 1..{self.steps - 1} (--steps {self.steps})"
                                  if self.steps > 1 else
                                  f"--switch {text!r}: a scene of {self.steps} step(s) has no step to switch before")
            if agent in schedule.get(at, {}):
                raise ConfigError(f"--switch names agent_{agent} twice at step {at}; give one prompt per agent and step")
            schedule.setdefault(at, {})[agent] = check(prompt, self.agents)
        for text in prompts.values():
            check(text, self.agents)
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "schedule", schedule)


def check(prompt: str, n_agents: int) -> str:
    from mirrorhall.imitation.model_io import check_prompt

    with user_input():
        return check_prompt(prompt, n_agents)


def parse_assignment(text: str, n_agents: int, flag: str) -> tuple[int, str]:
    """'agent_2=behave as agent 5' -> (2, 'behave as agent 5')."""
    m = re.fullmatch(r"\s*agent_(\d+)\s*=\s*(.+)", text, flags=re.S)
    if not m:
        raise ConfigError(f"{flag} must look like 'agent_2=behave as agent 5', got {text!r}")
    agent = int(m.group(1))
    if agent >= n_agents:
        raise ConfigError(f"{flag} names agent_{agent}, which is not in the scene (agent_0..agent_{n_agents - 1})")
    return agent, m.group(2).strip()


SWITCH_SHOWN = 5
"""Frames (steps) a prompt switch stays marked in the animation's caption (a second at 5 fps)."""


def caption(prompts: dict[int, str], schedule: dict[int, dict[int, str]], t: int) -> list[tuple[str, bool]]:
    """The animation's caption at step ``t``: per model-driven agent, its prompt in effect for
    the step taken from ``t`` on, emphasised for ``SWITCH_SHOWN`` steps after a switch."""
    lines = []
    for a in sorted(prompts):
        since, text = 0, prompts[a]
        for step in sorted(schedule):
            if step <= t and a in schedule[step]:
                since, text = step, schedule[step][a]
        fresh = since > 0 and t - since < SWITCH_SHOWN
        lead = f"switch at t={since}: " if fresh else ""
        tail = f" (since t={since})" if since and not fresh else ""
        lines.append((f"{lead}agent {a} (model): {text!r}{tail}", fresh))
    return lines


def _warn_unread(tokenizer, prompts) -> None:
    """One warning per distinct prompt holding words the model does not know."""
    from mirrorhall.imitation.model_io import warn_unread

    for text in dict.fromkeys(prompts):
        warn_unread(tokenizer, text, stacklevel=3)


def act(cfg: ActConfig, personas=None) -> int:
    """Run the scene; ``personas`` (a row of specs) replaces the population's draw."""
    from tqdm import tqdm

    check_output_file("--render", cfg.render)
    set_threads(cfg.threads)

    from mirrorhall.agents.populations import get_population
    from mirrorhall.agents.scene import run_scene
    from mirrorhall.envs.core import WorldConfig, WorldCore
    from mirrorhall.imitation.checkpoint import load_model, load_policy

    model, tokenizer, _ = load_model(cfg.checkpoint)
    _warn_unread(tokenizer, [*cfg.prompts.values(), *(p for c in cfg.schedule.values() for p in c.values())])
    colors = model.config.n_colors
    with user_input():
        world = WorldConfig(n_agents=cfg.agents, n_colors=colors, view_radius=cfg.view_radius,
                            max_cycles=max(cfg.steps, 1))
    driven = sorted(cfg.prompts)
    with user_input():
        policy = load_policy(cfg.checkpoint, WorldCore(world), driven)
        if personas is None:
            personas = scene_personas(cfg.population, cfg.agents, colors, cfg.seed, world=world)
        hypotheses = get_population(cfg.population).hypotheses(colors, cfg.agents)
    frames = []
    bar = tqdm(total=cfg.steps, desc="act", unit="step", disable=not cfg.progress, file=sys.stderr)

    def on_step(t, state, _):
        if cfg.render is not None:
            from mirrorhall.envs.render import render_rgb

            frames.append(render_rgb(world, state, caption=caption(cfg.prompts, cfg.schedule, t)))
        if t:
            bar.update(1)

    with warnings.catch_warnings():  # each prompt was named above, once, before the bar
        warnings.filterwarnings("ignore", message="prompt ", category=InputWarning)
        episode = run_scene(world, personas, cfg.steps, cfg.seed, hypotheses=hypotheses, on_step=on_step,
                            drivers=[policy.driver([cfg.prompts[a] for a in driven], cfg.schedule)])
    bar.close()
    labels = {a: f"model: {cfg.prompts[a]!r}" + "".join(
        f", from step {t}: {p[a]!r}" for t, p in sorted(cfg.schedule.items()) if a in p) for a in driven}
    print(summary_table(episode, labels))
    if cfg.render is not None:
        from mirrorhall.envs.render import save_animation

        with undo_file_on_failure(cfg.render):
            save_animation(frames, cfg.render)
        print(f"animation: {cfg.render} ({len(frames)} frames)")
    return 0
