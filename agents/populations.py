"""Named, frozen populations: which personas appear in a scene, in what proportions.

A population is a registry entry, not a subclass. ``sample_scene`` draws one persona per agent
with a passed-in generator; trait combinations in ``held_out`` never appear in training scenes
(``split="train"``) and are kept for the probes (``split="held_out"``). A population with
``swap_rate`` > 0 also schedules interventions: ``sample_events`` gives a fraction ``swap_rate``
of its episodes one swap of two gems of different colours at a uniformly drawn step.

Persona families (``agents/families.py``) enter a mix by name; a persona of a family is drawn
uniformly from the family's parameter grid for the scene's world. ``held_out_families`` are never
drawn for training scenes (``split="train"``) and stay available to probes (``split="held_out"``
or ``"all"``): ``lab-minus-<family>`` holds one family out entirely. ``lab+<family>+...`` (any
families, each once) is ``lab`` plus exactly the families named, each at ``FAMILY_WEIGHT``: the
diversity experiment's training populations (``mirrorhall/diversity.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirrorhall.agents.bayes import BeliefHypotheses, HypothesisSet
from mirrorhall.agents.families import family_grid
from mirrorhall.agents.personas import (
    FAMILIES,
    LIKES_NONE,
    STYLES,
    Believer,
    Imitator,
    Memoryless,
    Mirror,
    PersonaSpec,
    Species,
    Trait,
)
from mirrorhall.envs.core import COLOR_NAMES, WorldConfig, WorldEvent

SPLITS = ("train", "held_out", "all")
MIX_KINDS = ("trait", "imitator", "mirror", "species", "believer", "memoryless", *FAMILIES)
VIEWER_KINDS = ("believer", "memoryless")
"""Families whose personas act on what they see (now, or remembered): a liked colour, no 'follow'."""


@dataclass(frozen=True)
class Population:
    """A frozen recipe for the personas of a scene."""

    name: str
    description: str
    mix: tuple[tuple[str, float], ...]
    """(kind, weight) pairs; kinds from MIX_KINDS."""
    socials: tuple[str, ...] = ("none", "approach", "avoid")
    """Social traits used (follow targets are drawn among the other agents)."""
    styles: tuple[str, ...] = tuple(STYLES)
    held_out: frozenset = frozenset()
    """(likes, social, style) combinations kept out of training scenes."""
    fidelity: tuple[float, float] = (0.6, 1.0)
    """Imitator fidelity range, drawn uniformly."""
    mirror_noise: float = 0.1
    alphas: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    """Dirichlet concentrations of random species, drawn uniformly."""
    swap_rate: float = 0.0
    """Fraction of episodes given one swap event (``sample_events``); 0: no interventions."""
    held_out_families: tuple[str, ...] = ()
    """Families of the mix never drawn for training scenes (kept for the probes)."""

    def __post_init__(self):
        for kind, weight in self.mix:
            if kind not in MIX_KINDS:
                raise ValueError(f"population {self.name}: unknown kind {kind!r}; allowed: {', '.join(MIX_KINDS)}")
            if weight < 0:
                raise ValueError(f"population {self.name}: weight of {kind} must be >= 0")
        for fam in self.held_out_families:
            if fam not in FAMILIES:
                raise ValueError(f"population {self.name}: unknown held-out family {fam!r}; allowed: "
                                 f"{', '.join(FAMILIES)}")
        if not 0.0 <= self.swap_rate <= 1.0:
            raise ValueError(f"population {self.name}: swap_rate must be in [0, 1], got {self.swap_rate}")

    @property
    def remembers(self) -> bool:
        """Whether its scenes hold believers or memoryless personas (whose DESCRIBE labels read
        every agent's memory)."""
        return any(kind in VIEWER_KINDS and w > 0 for kind, w in self.mix)

    def viewer_combos(self, n_colors: int, split: str = "train") -> list[tuple[str, str, str]]:
        """(likes, social, style) of this population's believers and memoryless personas: a liked
        colour and a social term other than 'follow'."""
        return [c for c in self.combos(n_colors, split) if c[0] != LIKES_NONE and c[1] != "follow"]

    def belief_hypotheses(self, config: WorldConfig, split: str = "all") -> BeliefHypotheses:
        """Every believer and memoryless persona of the population, uniform prior."""
        combos = self.viewer_combos(config.n_colors, split)
        return BeliefHypotheses([cls(*c) for cls in (Believer, Memoryless) for c in combos], config)

    def sample_events(self, config: WorldConfig, steps: int, rng: np.random.Generator) -> tuple[WorldEvent, ...]:
        """One episode's interventions: with probability ``swap_rate``, one swap of two gems of
        different colours at a step drawn uniformly from 1..steps - 1; otherwise none. Draws
        nothing when ``swap_rate`` is 0."""
        if self.swap_rate <= 0 or steps < 2 or config.n_colors < 2:
            return ()
        happens, step, first, other = rng.random(), rng.integers(1, steps), rng.integers(config.n_gems), \
            rng.integers(config.n_gems - config.gems_per_color)
        if happens >= self.swap_rate:
            return ()
        # ``other`` indexes the gems of the other colours
        own = first // config.gems_per_color
        other = other + config.gems_per_color * (other >= own * config.gems_per_color)
        return (WorldEvent(int(step), "swap", int(first), other=int(other)),)

    def combos(self, n_colors: int, split: str = "all") -> list[tuple[str, str, str]]:
        """Trait combinations (likes, social, style) of this population for a world's colours."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        likes = (*COLOR_NAMES[:n_colors], LIKES_NONE)
        allc = [(lk, so, st) for lk in likes for so in self.socials for st in self.styles]
        if split == "all":
            return allc
        held = [c for c in allc if c in self.held_out]
        return held if split == "held_out" else [c for c in allc if c not in self.held_out]

    def hypotheses(self, n_colors: int, n_agents: int) -> HypothesisSet:
        """Every trait persona of the population (held-out ones included), uniform prior.

        Follow traits get one hypothesis per possible followed agent.
        """
        traits = []
        for lk, so, st in self.combos(n_colors):
            if so == "follow":
                traits += [Trait(lk, so, st, follow=k) for k in range(n_agents)]
            else:
                traits.append(Trait(lk, so, st))
        return HypothesisSet(traits, n_colors, n_agents)

    def _trait(self, i: int, n_agents: int, n_colors: int, rng, split: str) -> Trait:
        combos = self.combos(n_colors, split)
        lk, so, st = combos[rng.integers(len(combos))]
        if so == "follow":
            if n_agents == 1:
                so = "none"
            else:
                others = [k for k in range(n_agents) if k != i]
                return Trait(lk, so, st, follow=int(others[rng.integers(len(others))]))
        return Trait(lk, so, st)

    def families(self, split: str = "train") -> tuple[str, ...]:
        """The persona families of the mix drawn for scenes of ``split`` (train: without the
        held-out families; held_out: only them; all: every one)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        mixed = tuple(k for k, w in self.mix if k in FAMILIES and w > 0)
        if split == "train":
            return tuple(f for f in mixed if f not in self.held_out_families)
        return tuple(f for f in mixed if split == "all" or f in self.held_out_families)

    def sample_scene(self, n_agents: int, n_colors: int, rng: np.random.Generator,
                     split: str = "train", world: WorldConfig | None = None) -> tuple[PersonaSpec, ...]:
        """One persona per agent. Imitators, mirrors and contrarians target another agent of the
        scene. Family personas come from their grid for ``world`` (None: a world of the default
        size with these agents and colours). Training scenes never hold a held-out family."""
        mix = [(k, w) for k, w in self.mix if not (split == "train" and k in self.held_out_families)]
        kinds = [k for k, _ in mix]
        w = np.array([wt for _, wt in mix], dtype=np.float64)
        out = []
        for i in range(n_agents):
            kind = kinds[rng.choice(len(kinds), p=w / w.sum())]
            if kind in ("imitator", "mirror", "contrarian") and n_agents == 1:
                kind = "trait"
            if kind in FAMILIES:
                if world is None:
                    world = WorldConfig(n_agents=n_agents, n_colors=n_colors)
                grid = family_grid(kind, world, agent=i)
                out.append(grid[rng.integers(len(grid))])
            elif kind == "trait":
                out.append(self._trait(i, n_agents, n_colors, rng, split))
            elif kind in VIEWER_KINDS:
                combos = self.viewer_combos(n_colors, split)
                cls = Believer if kind == "believer" else Memoryless
                out.append(cls(*combos[rng.integers(len(combos))]))
            elif kind == "species":
                out.append(Species.draw(self.alphas[rng.integers(len(self.alphas))], rng))
            else:
                target = int(rng.integers(n_agents - 1))
                target += target >= i
                if kind == "imitator":
                    lo, hi = self.fidelity
                    out.append(Imitator(target, float(rng.uniform(lo, hi)),
                                        self._trait(i, n_agents, n_colors, rng, split)))
                else:
                    out.append(Mirror(target, self.mirror_noise))
        return tuple(out)


_LAB_MIX = (("trait", 0.55), ("imitator", 0.15), ("mirror", 0.1), ("species", 0.2))
FAMILY_WEIGHT = 0.1
"""Weight of each persona family in the mixes of ``lab-families`` and ``lab-minus-<family>``."""
LAB_FAMILIES = "lab-families"

_HELD_OUT = frozenset({
    ("red", "avoid", "focused"),
    ("blue", "approach", "erratic"),
    ("green", "none", "casual"),
    (LIKES_NONE, "approach", "focused"),
})

POPULATIONS: dict[str, Population] = {
    p.name: p
    for p in (
        Population("traits", "trait personas only (likes x social x style)", (("trait", 1.0),),
                   held_out=_HELD_OUT),
        Population("crowd", "trait personas with imitators and funhouse mirrors among them",
                   (("trait", 0.7), ("imitator", 0.2), ("mirror", 0.1)), held_out=_HELD_OUT),
        Population("followers", "trait personas, some following a named agent",
                   (("trait", 1.0),), socials=("none", "approach", "avoid", "follow"),
                   held_out=_HELD_OUT),
        Population("species", "random agents with Dirichlet(alpha) action distributions (ToMnet)",
                   (("species", 1.0),)),
        Population("lab", "everything at once: trait personas, imitators, mirrors and random agents",
                   (("trait", 0.55), ("imitator", 0.15), ("mirror", 0.1), ("species", 0.2)),
                   held_out=_HELD_OUT),
        Population(LAB_FAMILIES, "lab plus every persona family (patrol, collector, territorial, contrarian, "
                   "explorer); lab itself stays as it is, because the shipped checkpoints and the figures "
                   "reproduced in docs/results.md were made on it",
                   _LAB_MIX + tuple((f, FAMILY_WEIGHT) for f in FAMILIES), held_out=_HELD_OUT),
        *(Population(f"lab-minus-{fam}", f"{LAB_FAMILIES} with the {fam} family held out of training "
                     f"(its personas appear only in probe scenes)",
                     _LAB_MIX + tuple((f, FAMILY_WEIGHT) for f in FAMILIES), held_out=_HELD_OUT,
                     held_out_families=(fam,)) for fam in FAMILIES),
        Population("lab-belief", "lab plus believers (they act on where they last saw gems) and their "
                   "memoryless control, with one gem swap in half of the episodes (use a view radius)",
                   (("trait", 0.55), ("imitator", 0.15), ("mirror", 0.1), ("species", 0.2),
                    ("believer", 0.3), ("memoryless", 0.1)),
                   held_out=_HELD_OUT, swap_rate=0.5),
    )
}
DEFAULT_POPULATION = "crowd"


COMPOSED = "lab+"
"""Prefix of the composed populations: ``lab+patrol+collector`` is lab plus those two families."""


def lab_with(families) -> str:
    """The composed population name of ``lab`` plus ``families`` (``lab`` itself for none)."""
    return "+".join(("lab", *families))


def _composed(name: str) -> Population:
    fams = name[len(COMPOSED):].split("+")
    for fam in fams:
        if fam not in FAMILIES:
            raise ValueError(f"population {name!r}: unknown family {fam!r} after 'lab+'; allowed: {', '.join(FAMILIES)}")
    if len(set(fams)) < len(fams):
        raise ValueError(f"population {name!r} names a family twice; name each family once, e.g. lab+patrol+collector")
    return Population(name, f"lab plus the {', '.join(fams)} famil{'ies' if len(fams) > 1 else 'y'} only",
                      _LAB_MIX + tuple((f, FAMILY_WEIGHT) for f in fams), held_out=_HELD_OUT)


def is_population(name) -> bool:
    """Whether ``name`` is a registered or a well-formed composed population."""
    try:
        get_population(name)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def get_population(name: str) -> Population:
    """The registered population ``name``, or a composed ``lab+<family>+...``; a clear error lists
    the known names."""
    if isinstance(name, str) and name.startswith(COMPOSED):
        return _composed(name)
    if name not in POPULATIONS:
        raise ValueError(f"unknown population {name!r}; allowed: {', '.join(POPULATIONS)}, or lab+<family>+... "
                         f"(families: {', '.join(FAMILIES)})")
    return POPULATIONS[name]
