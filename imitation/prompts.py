"""Prompts: what an agent is asked to do, as a seeded, validated space of natural-language texts.

Kinds
    SELF            "behave as yourself"
    DESCRIBE(h)     "behave as a focused agent that likes red gems and avoids others" (a trait
                    persona), "... likes red gems, remembers where it saw them and ignores others"
                    (a believer), "... likes red gems, forgets what it cannot see and ..." (its
                    memoryless control)
    OTHER(k)        "behave as agent 3"
    SECOND(k)       "pretend to be agent 3 pretending to be you"
    RETURN(n, c, T) "collect 3 blue gems in the next 20 steps" (outcome conditioning, labelled in
                    hindsight from what the agent actually achieved)

Every kind has several paraphrase templates; the ones marked held out never appear in training
data and are used only by the probes. ``PromptSpace`` samples prompts with a passed-in generator
and validates them; ``parse_prompt`` reads a text back into a ``Prompt``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from mirrorhall.agents.personas import (
    BELIEVER_MEMORY,
    LIKES_NONE,
    MEMORYLESS_MEMORY,
    STYLES,
    Believer,
    Memoryless,
    Trait,
)
from mirrorhall.envs.core import COLOR_NAMES


class Kind(IntEnum):
    SELF = 0
    DESCRIBE = 1
    OTHER = 2
    SECOND = 3
    RETURN = 4


KIND_NAMES = tuple(k.name for k in Kind)


def kind_from_name(name: str) -> Kind:
    if str(name).upper() not in KIND_NAMES:
        raise ValueError(f"unknown prompt kind {name!r}; allowed: {', '.join(KIND_NAMES)}")
    return Kind[str(name).upper()]


@dataclass(frozen=True)
class Template:
    text: str
    held_out: bool = False


# {k}: an agent id; {desc}: a trait description; {n} {what} {horizon}: a RETURN outcome.
TEMPLATES: dict[Kind, tuple[Template, ...]] = {
    Kind.SELF: (
        Template("behave as yourself"),
        Template("act like yourself"),
        Template("just be yourself"),
        Template("do what you would normally do"),
        Template("carry on as you normally would", held_out=True),
    ),
    Kind.DESCRIBE: (
        Template("behave as {desc}"),
        Template("act like {desc}"),
        Template("be {desc}"),
        Template("pretend you are {desc}", held_out=True),
    ),
    Kind.OTHER: (
        Template("behave as agent {k}"),
        Template("act like agent {k}"),
        Template("imitate agent {k}"),
        Template("do what agent {k} would do"),
        Template("copy agent {k}", held_out=True),
    ),
    Kind.SECOND: (
        Template("pretend to be agent {k} pretending to be you"),
        Template("behave as agent {k} would if it were imitating you"),
        Template("act like agent {k} imitating you"),
        Template("be agent {k} doing an impression of you", held_out=True),
    ),
    Kind.RETURN: (
        Template("collect {n} {what} in the next {horizon} steps"),
        Template("gather {n} {what} within {horizon} steps"),
        Template("get {n} {what} over the next {horizon} steps", held_out=True),
    ),
}
RETURN_HORIZONS = (10, 20)


@dataclass(frozen=True)
class Prompt:
    """A validated prompt. ``text`` is what the model reads; the rest is what it means."""

    kind: Kind
    text: str
    target: int | None = None
    """The agent named by OTHER(k) and SECOND(k)."""
    trait: Trait | Believer | Memoryless | None = None
    """The persona described by DESCRIBE(h)."""
    outcome: tuple[int, str, int] | None = None
    """RETURN: (number of gems, colour name or 'any', horizon in steps)."""
    template: int = 0
    held_out: bool = field(default=False)

    def __post_init__(self):
        if (self.kind in (Kind.OTHER, Kind.SECOND)) != (self.target is not None):
            raise ValueError(f"prompt {self.text!r}: an agent id is required exactly for OTHER and SECOND")
        if (self.kind == Kind.DESCRIBE) != (self.trait is not None):
            raise ValueError(f"prompt {self.text!r}: a trait is required exactly for DESCRIBE")
        if (self.kind == Kind.RETURN) != (self.outcome is not None):
            raise ValueError(f"prompt {self.text!r}: an outcome is required exactly for RETURN")


def describe_trait(trait: Trait) -> str:
    """The noun phrase used inside DESCRIBE prompts."""
    return trait.describe()


def outcome_words(n: int, color: str) -> str:
    noun = "gem" if n == 1 else "gems"
    return f"{n} {noun}" if color == "any" else f"{n} {color} {noun}"


def render(kind: Kind, template: int, *, target=None, trait=None, outcome=None) -> Prompt:
    """Build a prompt from a kind, a template index and its arguments."""
    kind = Kind(kind)
    temps = TEMPLATES[kind]
    if not 0 <= template < len(temps):
        raise ValueError(f"template must be in 0..{len(temps) - 1} for {kind.name}, got {template}")
    t = temps[template]
    if kind == Kind.RETURN:
        n, color, horizon = outcome
        text = t.text.format(n=n, what=outcome_words(n, color).split(" ", 1)[1], horizon=horizon)
    else:
        text = t.text.format(k=target, desc=describe_trait(trait) if trait else "")
    return Prompt(kind, text, target=target, trait=trait, outcome=outcome, template=template,
                  held_out=t.held_out)


class PromptSpace:
    """Prompts for a scene of ``n_agents`` agents and ``n_colors`` colours, sampled reproducibly."""

    def __init__(self, n_agents: int, n_colors: int, split: str = "train"):
        if split not in ("train", "held_out", "all"):
            raise ValueError(f"split must be one of train, held_out, all; got {split!r}")
        self.n_agents, self.n_colors, self.split = n_agents, n_colors, split

    def templates(self, kind: Kind) -> list[int]:
        temps = TEMPLATES[Kind(kind)]
        return [i for i, t in enumerate(temps)
                if self.split == "all" or t.held_out == (self.split == "held_out")]

    def sample_template(self, kind: Kind, rng: np.random.Generator) -> int:
        idx = self.templates(kind)
        return idx[rng.integers(len(idx))]

    def sample(self, kind: Kind, rng: np.random.Generator, *, target=None, trait=None,
               outcome=None) -> Prompt:
        prompt = render(kind, self.sample_template(kind, rng), target=target, trait=trait,
                        outcome=outcome)
        self.validate(prompt)
        return prompt

    def validate(self, prompt: Prompt) -> Prompt:
        """Check a prompt against the scene; ValueError names what is wrong."""
        if prompt.target is not None and not 0 <= prompt.target < self.n_agents:
            raise ValueError(
                f"prompt {prompt.text!r} names agent {prompt.target}, which is not in the scene "
                f"(agents 0..{self.n_agents - 1})"
            )
        if prompt.trait is not None and prompt.trait.likes not in (*COLOR_NAMES[: self.n_colors], LIKES_NONE):
            raise ValueError(f"prompt {prompt.text!r}: colour {prompt.trait.likes} is not in this world")
        if prompt.outcome is not None:
            n, color, horizon = prompt.outcome
            if color != "any" and color not in COLOR_NAMES[: self.n_colors]:
                raise ValueError(f"prompt {prompt.text!r}: colour {color} is not in this world")
            if n < 0 or horizon < 1:
                raise ValueError(f"prompt {prompt.text!r}: need n >= 0 gems and a horizon >= 1 step")
        return prompt


# --- parsing texts back into prompts -------------------------------------------------------------

_STYLE = "|".join(STYLES)
_COLOR = "|".join(COLOR_NAMES)
_DESC = (rf"an? (?P<style>{_STYLE}) agent that likes (?:(?P<likes>{_COLOR}) gems|no gem in particular)"
         rf"(?:, (?P<memory>{BELIEVER_MEMORY}|{MEMORYLESS_MEMORY}))? "
         r"and (?P<social>ignores others|approaches others|avoids others|follows agent (?P<follow>\d+))")


def _pattern(template: str) -> re.Pattern:
    body = re.escape(template)
    body = body.replace(re.escape("{k}"), r"(?P<k>\d+)").replace(re.escape("{desc}"), _DESC)
    body = body.replace(re.escape("{n}"), r"(?P<n>\d+)").replace(re.escape("{horizon}"), r"(?P<h>\d+)")
    body = body.replace(re.escape("{what}"), rf"(?:(?P<color>{_COLOR}) )?gems?")
    # matched against the stripped text: one run of optional spaces keeps matching linear in length
    return re.compile(rf"{body}\s*[.!]?", re.IGNORECASE)


_PATTERNS = [(kind, i, _pattern(t.text)) for kind, temps in TEMPLATES.items() for i, t in enumerate(temps)]
_SOCIAL_WORDS = {"ignores others": "none", "approaches others": "approach", "avoids others": "avoid"}


MAX_DIGITS = 9
"""Longest number a prompt may hold (agent ids, gem counts, horizons)."""


def shorten(text: str, limit: int = 80) -> str:
    """``repr`` of a text for an error message, cut to about ``limit`` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit + 2 else shown[:limit] + f"... ({len(text)} characters)"


def parse_prompt(text: str) -> Prompt:
    """Read a prompt text written in any template's words; ValueError lists what is understood."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a prompt must be a non-empty text, e.g. 'behave as yourself' or 'behave as agent 3'")
    stripped = text.strip()
    for kind, i, pat in _PATTERNS:
        m = pat.fullmatch(stripped)
        if not m:
            continue
        g = m.groupdict()
        for key in ("k", "n", "h", "follow"):
            if g.get(key) and len(g[key]) > MAX_DIGITS:
                raise ValueError(f"prompt {shorten(text)}: the number {shorten(g[key], 12)} is too large")
        if kind == Kind.DESCRIBE:
            social = g["social"].lower()
            follow = int(g["follow"]) if g.get("follow") else None
            trait = Trait((g["likes"] or LIKES_NONE).lower(),
                          "follow" if follow is not None else _SOCIAL_WORDS[social],
                          g["style"].lower(), follow)
            if g.get("memory"):  # a believer or its memoryless control
                cls = Believer if g["memory"].lower() == BELIEVER_MEMORY else Memoryless
                trait = cls(trait.likes, trait.social, trait.style)
            return render(kind, i, trait=trait)
        if kind == Kind.RETURN:
            return render(kind, i, outcome=(int(g["n"]), (g["color"] or "any").lower(), int(g["h"])))
        if kind in (Kind.OTHER, Kind.SECOND):
            return render(kind, i, target=int(g["k"]))
        return render(kind, i)
    raise ValueError(
        f"cannot read prompt {shorten(text)}; try 'behave as yourself', 'behave as agent 3', "
        "'pretend to be agent 3 pretending to be you', 'behave as a focused agent that likes red "
        "gems and avoids others' or 'collect 3 blue gems in the next 20 steps'"
    )

