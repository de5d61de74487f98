"""``mirrorhall prompts``: the prompt language in a few lines per meaning kind.

The grammar itself is ``mirrorhall.imitation.prompts`` (docs/prompts.md lists every family).
"""

from __future__ import annotations

from dataclasses import dataclass

from mirrorhall.commands.options import option
from mirrorhall.errors import ConfigError

KINDS = ("all", "self", "describe", "other", "second", "return")
MEANINGS = {
    "SELF": "be yourself",
    "DESCRIBE": "behave as a described persona",
    "OTHER": "behave as agent k (after watching it)",
    "SECOND": "behave as agent k would if it were imitating you",
    "RETURN": "collect n gems (of a colour or any) within a horizon",
}


@dataclass(frozen=True)
class PromptsConfig:
    """``mirrorhall prompts``: which meaning kinds to show, and how many examples of each."""

    kind: str = option("all", choices=KINDS)
    """The meaning kind to show (all: every kind)."""
    examples: int = 4
    """Example wordings per kind, one per training family (at least 1)."""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"--kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if isinstance(self.examples, bool) or not isinstance(self.examples, int) or not 1 <= self.examples <= 100:
            raise ConfigError(f"--examples must be an integer in 1..100; got {self.examples!r}")


def describe_language(cfg: PromptsConfig) -> str:
    """The text ``mirrorhall prompts`` prints."""
    from mirrorhall.agents.personas import Trait
    from mirrorhall.imitation.prompts import (
        AGENT_PHRASES,
        CANONICAL,
        FILLERS_AFTER,
        FILLERS_BEFORE,
        Kind,
        families,
        fill,
    )

    args = {"target": 3, "trait": Trait("red", "avoid", "focused"), "outcome": (2, "blue", 20)}
    lines = [
        "The prompt language (docs/prompts.md lists every family). Each meaning kind is written many ways:",
        "a family is a whole verb or frame; families marked held out never occur in training and test",
        "whether the model reads words rather than positions.",
        "",
        "Agent ids: digits or words, 'agent 3' = 'agent three'; also "
        + ", ".join(repr(p.replace("{k}", "3")) for p in AGENT_PHRASES[1:]) + ".",
        "Agent ids start at 0; a prompt may only name agents of the scene.",
        "Optional words before: " + ", ".join(repr(f) for f in FILLERS_BEFORE) + ".",
        "Optional words after: " + ", ".join(repr(f) for f in FILLERS_AFTER) + ".",
    ]
    kinds = list(Kind) if cfg.kind == "all" else [Kind[cfg.kind.upper()]]
    for kind in kinds:
        lines += ["", f"{kind.name}: {MEANINGS[kind.name]}",
                  f"  canonical: {fill(CANONICAL[kind], **_args(kind, args))}"]
        for fam in families(kind, held_out=False)[: cfg.examples]:
            lines.append(f"  {fill(fam.forms[-1], **_args(kind, args)):<60} ({fam.name})")
        held = families(kind, held_out=True)
        lines.append("  held out: " + "; ".join(f"{f.name} ({fill(f.forms[0], **_args(kind, args))!r})" for f in held))
    return "\n".join(lines)


def _args(kind, args: dict) -> dict:
    from mirrorhall.imitation.prompts import Kind

    return {Kind.OTHER: {"target": args["target"]}, Kind.SECOND: {"target": args["target"]},
            Kind.DESCRIBE: {"trait": args["trait"]}, Kind.RETURN: {"outcome": args["outcome"]}}.get(kind, {})


def prompts(cfg: PromptsConfig) -> int:
    print(describe_language(cfg))
    return 0
