"""Persona specifications: frozen, JSON-serialisable, described in plain language.

A persona is a pure policy with exact action probabilities. The specs here say *which* policy;
``mirrorhall.agents.cast`` evaluates any mix of them, vectorised over worlds and agents, in an
agent's own situation or counterfactually in another agent's situation.

- ``Trait(likes, social, style)``: ``pi(a|s) = softmax(beta_style * U(s, a))`` with
  ``U = -GEM_WEIGHT * d(nearest liked gem after a) + social term after a``. The social term is
  ``-SOCIAL_WEIGHT * d(nearest other agent)`` (approach), ``+SOCIAL_WEIGHT * d`` (avoid),
  ``-SOCIAL_WEIGHT * d(agent k)`` (follow k), or 0; a term whose object is not visible is 0.
- ``Species(probs, alpha)``: a fixed action distribution drawn from Dirichlet(alpha) (ToMnet).
- ``Imitator(target, fidelity, own)``: keeps a Bayes belief ``b`` over trait hypotheses for agent
  ``target`` and acts with ``f * sum_h b(h) pi_h(a|s) + (1 - f) * pi_own(a|s)``.
- ``Mirror(target, noise)``: repeats the target's last action reflected left<->right, with
  probability ``noise`` spread uniformly over the 5 actions.
- ``Believer(likes, social, style)``: a trait persona whose gem term reads its *memory*: for every
  cell, what it last saw there (a gem of some colour, or nothing; never seen: nothing). It acts
  with ``softmax(beta * U)`` where the gem term is ``-GEM_WEIGHT * d(nearest cell it believes
  holds a liked gem, after a)``. Its memory is its state, updated from its own view at every step
  before it acts, so a gem swapped out of its view stays where it last saw it: a false belief.
  Under full view it acts exactly as ``Trait(likes, social, style)``.
- ``Memoryless(likes, social, style)``: the control for believers: the same preferences, acting
  only on what it sees now (its probabilities are those of ``Trait(likes, social, style)``).

Persona families beyond the trait basis (their probabilities are not softmax-linear in the
relational features the model reads; ``mirrorhall.agents.families`` evaluates them and documents
each formula):

- ``Patrol(waypoints, noise)``: walks a fixed loop of cells; depends on place and on its phase
  (which waypoint is next).
- ``Collector(order, style)``: collects colours in a fixed cyclic order; depends on its inventory
  (which colour is next, after what it has collected).
- ``Territorial(home, radius, style)``: stays near a home cell and leaves it only for gems inside
  its territory; depends on place.
- ``Contrarian(target, noise)``: does the opposite of its target's last move, and moves away from
  the target when the target stayed; depends on a target's last move.
- ``Explorer(memory, style)``: prefers cells it has not stood on in its last ``memory`` steps
  (the shape of its trail, laid from wherever it is asked to act); depends on its own history.

Each family is a finite parameter grid (``family_grid`` in ``mirrorhall.agents.families``), so
the exact Bayes observer exists for it (``mirrorhall.agents.bayes.FamilyObserver``). Each writes
its description in words (``describe``) and reads it back (its ``description`` pattern and
``from_description``), for any parameters it accepts: the prompt grammar's DESCRIBE forms are built
from these patterns.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from decimal import Decimal

import numpy as np

from mirrorhall.envs.core import COLOR_NAMES, N_ACTIONS

LIKES_NONE = "none"
SOCIALS = ("none", "approach", "avoid", "follow")
STYLES = {"focused": 3.0, "casual": 1.0, "erratic": 0.3}
"""Style -> inverse temperature beta."""
GEM_WEIGHT = 1.0
SOCIAL_WEIGHT = 0.5


def _one_of(field: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _is_id(value) -> bool:
    """A non-negative agent id: an integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value >= 0


def _is_real(value) -> bool:
    """A finite real number, not a bool."""
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)) and bool(np.isfinite(value)))


@dataclass(frozen=True)
class Trait:
    """A trait persona h = (likes, social, style)."""

    likes: str = LIKES_NONE
    """A colour name, or 'none'."""
    social: str = "none"
    """'none', 'approach' (nearest other agent), 'avoid' (nearest other agent) or 'follow'."""
    style: str = "casual"
    """'focused', 'casual' or 'erratic' (the inverse temperature, from STYLES)."""
    follow: int | None = None
    """The agent followed, when social == 'follow'."""

    kind = "trait"

    def __post_init__(self):
        _one_of("likes", self.likes, (*COLOR_NAMES, LIKES_NONE))
        _one_of("social", self.social, SOCIALS)
        _one_of("style", self.style, tuple(STYLES))
        if (self.social == "follow") != (self.follow is not None):
            raise ValueError("follow: give an agent id exactly when social == 'follow'")
        if self.follow is not None and not _is_id(self.follow):
            raise ValueError(f"follow must be a non-negative agent id, got {self.follow!r}")
        if self.follow is not None:
            object.__setattr__(self, "follow", int(self.follow))

    @property
    def beta(self) -> float:
        return STYLES[self.style]

    @property
    def combo(self) -> tuple[str, str, str]:
        """(likes, social, style): the trait combination, used for held-out sets."""
        return (self.likes, self.social, self.style)

    def describe(self) -> str:
        article = "an" if self.style[0] in "aeiou" else "a"
        parts = [f"{article} {self.style} agent"]
        parts.append("that likes no gem in particular" if self.likes == LIKES_NONE
                     else f"that likes {self.likes} gems")
        social = {
            "none": "ignores others",
            "approach": "approaches others",
            "avoid": "avoids others",
            "follow": f"follows agent {self.follow}",
        }[self.social]
        return f"{parts[0]} {parts[1]} and {social}"

    def to_json(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class Species:
    """A random agent with a fixed, state-independent action distribution."""

    probs: tuple[float, ...]
    alpha: float

    kind = "species"

    def __post_init__(self):
        p = np.asarray(self.probs, dtype=np.float64)
        if p.shape != (N_ACTIONS,) or not np.all(p >= 0) or abs(p.sum() - 1) > 1e-6:
            raise ValueError(f"probs must be {N_ACTIONS} non-negative numbers summing to 1, got {self.probs!r}")
        if not _is_real(self.alpha) or not self.alpha > 0:
            raise ValueError(f"alpha must be a finite number > 0, got {self.alpha!r}")
        if abs(p.sum() - 1) > 1e-12:  # renormalise only when needed, so JSON round trips are exact
            p = p / p.sum()
        object.__setattr__(self, "probs", tuple(float(x) for x in p))

    @classmethod
    def draw(cls, alpha: float, rng: np.random.Generator) -> Species:
        p = rng.dirichlet(np.full(N_ACTIONS, alpha))
        p = np.maximum(p, 1e-12)  # tiny alphas underflow to exact zeros; keep log-probs finite
        return cls(tuple(p / p.sum()), alpha)

    def describe(self) -> str:
        from mirrorhall.envs.core import ACTIONS

        top = ACTIONS[int(np.argmax(self.probs))]
        habit = "mostly stays put" if top == "stay" else f"mostly moves {top}"
        return f"a random agent (Dirichlet alpha={self.alpha:g}) that {habit}"

    def to_json(self) -> dict:
        return {"kind": self.kind, "probs": list(self.probs), "alpha": self.alpha}


@dataclass(frozen=True)
class Imitator:
    """Imitates agent ``target`` from a Bayes belief over trait hypotheses."""

    target: int
    fidelity: float
    own: Trait = Trait()

    kind = "imitator"

    def __post_init__(self):
        if not _is_id(self.target):
            raise ValueError(f"target must be a non-negative agent id, got {self.target!r}")
        if not _is_real(self.fidelity) or not 0.0 <= self.fidelity <= 1.0:
            raise ValueError(f"fidelity must be a number in [0, 1], got {self.fidelity!r}")
        if not isinstance(self.own, Trait):
            raise ValueError(f"own must be a Trait persona, got {type(self.own).__name__}")
        object.__setattr__(self, "target", int(self.target))

    def describe(self) -> str:
        return (f"imitates agent {self.target} (fidelity {self.fidelity:.2f}); "
                f"otherwise {self.own.describe()}")

    def to_json(self) -> dict:
        return {"kind": self.kind, "target": self.target, "fidelity": self.fidelity,
                "own": self.own.to_json()}


def _check_target_noise(spec) -> None:
    """A spec that reads another agent's moves: a valid target id and a noise in [0, 1]."""
    if not _is_id(spec.target):
        raise ValueError(f"target must be a non-negative agent id, got {spec.target!r}")
    if not _is_real(spec.noise) or not 0.0 <= spec.noise <= 1.0:
        raise ValueError(f"noise must be a number in [0, 1], got {spec.noise!r}")
    object.__setattr__(spec, "target", int(spec.target))


@dataclass(frozen=True)
class Mirror:
    """The funhouse mirror: agent ``target``'s last move, reflected left<->right."""

    target: int
    noise: float = 0.1

    kind = "mirror"

    def __post_init__(self):
        _check_target_noise(self)

    def describe(self) -> str:
        return f"mirrors agent {self.target}'s moves left-right (noise {self.noise:.2f})"

    def to_json(self) -> dict:
        return {"kind": self.kind, "target": self.target, "noise": self.noise}


def _check_viewer(spec) -> None:
    """Believer and Memoryless: a liked colour (not 'none'), a social term without 'follow', a style."""
    _one_of("likes", spec.likes, COLOR_NAMES)
    _one_of("social", spec.social, SOCIALS[:3])
    _one_of("style", spec.style, tuple(STYLES))


def _viewer_text(spec, memory: str) -> str:
    article = "an" if spec.style[0] in "aeiou" else "a"
    social = {"none": "ignores others", "approach": "approaches others", "avoid": "avoids others"}[spec.social]
    return f"{article} {spec.style} agent that likes {spec.likes} gems, {memory} and {social}"


BELIEVER_MEMORY = "remembers where it saw them"
MEMORYLESS_MEMORY = "forgets what it cannot see"


@dataclass(frozen=True)
class _Viewer:
    """Trait preferences judged from the persona's own view; ``Believer`` and ``Memoryless``
    differ only in what they do with gems out of sight."""

    likes: str = "red"
    """A colour name (not 'none': a believer heads for a remembered gem)."""
    social: str = "none"
    """'none', 'approach' or 'avoid' (nearest other agent it sees now)."""
    style: str = "focused"
    """'focused', 'casual' or 'erratic' (the inverse temperature, from STYLES)."""

    kind = ""
    memory_text = ""

    def __post_init__(self):
        _check_viewer(self)

    @property
    def beta(self) -> float:
        return STYLES[self.style]

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.likes, self.social, self.style)

    @property
    def trait(self) -> Trait:
        """The trait persona with the same preferences (a believer equals it under full view; the
        memoryless control has its probabilities always)."""
        return Trait(self.likes, self.social, self.style)

    def describe(self) -> str:
        return _viewer_text(self, self.memory_text)

    def to_json(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class Believer(_Viewer):
    """A trait persona that acts on where it last saw gems (see the module docstring)."""

    kind = "believer"
    memory_text = BELIEVER_MEMORY


@dataclass(frozen=True)
class Memoryless(_Viewer):
    """The believers' control: the same preferences, acting only on what it sees now."""

    kind = "memoryless"
    memory_text = MEMORYLESS_MEMORY


# --- descriptions of the persona families, and their patterns -------------------------------------
#
# Each family writes its description (``describe``) and reads it back: ``description`` is a regular
# expression of every text ``describe`` writes, its groups named ``<kind>_...`` so that the prompt
# grammar can join every family's pattern in one alternation, and ``from_description`` builds the
# spec from the groups of a match. ``mirrorhall.imitation.prompts`` joins them into its DESCRIBE
# forms; a new family brings its own. The patterns hold no nested repetition, so a match takes time
# linear in the text's length.

MAX_DIGITS = 9
"""Longest whole number a description (and a prompt) may hold: cells, agent ids, radii, memories."""
_WHOLE = r"\d+"
_CELL = r"\(\d+, \d+\)"
_PERCENT = r"\d+(?:\.\d+)?"
_STYLE = "|".join(STYLES)
_COLOR = "|".join(COLOR_NAMES)


def _whole(text: str) -> int:
    """A whole number of a description; ValueError when it is longer than MAX_DIGITS digits."""
    if len(text) > MAX_DIGITS:
        shown = text if len(text) <= 12 else text[:12] + "..."
        raise ValueError(f"the number {shown} is too large")
    return int(text)


def _percent(fraction: float) -> str:
    """A fraction in [0, 1] as a percentage without rounding: 0.1 -> "10", 0.123 -> "12.3" (the
    shortest decimal of the float, shifted by two places, so ``_fraction`` gives the same float)."""
    return f"{Decimal(repr(float(fraction))).scaleb(2).normalize():f}"


def _fraction(percent: str) -> float:
    """Inverse of ``_percent``: the float nearest the decimal ``percent`` / 100, exactly."""
    return float(Decimal(percent).scaleb(-2))


def _cells(text: str) -> tuple[tuple[int, int], ...]:
    """The (row, col) cells of a text of "(r, c)" pairs."""
    nums = [_whole(x) for x in re.findall(r"\d+", text)]
    return tuple(zip(nums[::2], nums[1::2], strict=True))


def _check_cell(field: str, cell) -> tuple[int, int]:
    """A (row, col) pair of non-negative integers (whether it is a floor cell of a world is checked
    when a cast is built)."""
    if isinstance(cell, (str, bytes)) or not hasattr(cell, "__len__") or len(cell) != 2 \
            or not all(_is_id(v) for v in cell):
        raise ValueError(f"{field} must be a (row, col) pair of non-negative integers, got {cell!r}")
    return (int(cell[0]), int(cell[1]))


def _cell_text(cell: tuple[int, int]) -> str:
    return f"({cell[0]}, {cell[1]})"


def _style_article(style: str) -> str:
    return "an" if style[0] in "aeiou" else "a"


@dataclass(frozen=True)
class Patrol:
    """Walks the loop ``waypoints`` (flat cells are checked against the world when a cast is built):
    its next waypoint is its phase, advanced when it stands on that waypoint."""

    waypoints: tuple[tuple[int, int], ...]
    """At least two (row, col) cells, visited in order and then again from the first."""
    noise: float = 0.1
    """Probability of a uniformly random action instead of a step towards the next waypoint."""

    kind = "patrol"

    def __post_init__(self):
        if isinstance(self.waypoints, (str, bytes)) or not hasattr(self.waypoints, "__len__") \
                or len(self.waypoints) < 2:
            raise ValueError(f"waypoints must be a list of at least two (row, col) cells, got {self.waypoints!r}")
        cells = tuple(_check_cell(f"waypoints[{i}]", c) for i, c in enumerate(self.waypoints))
        for i, c in enumerate(cells):
            if c == cells[(i + 1) % len(cells)]:
                raise ValueError(f"waypoints[{i}] and the next waypoint are the same cell {_cell_text(c)}; "
                                 "give consecutive waypoints distinct cells")
        if not _is_real(self.noise) or not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be a number in [0, 1], got {self.noise!r}")
        object.__setattr__(self, "waypoints", cells)

    description = (rf"a patrolling agent that walks the loop (?P<patrol_loop>{_CELL}(?:, {_CELL})+) "
                   rf"and strays (?P<patrol_noise>{_PERCENT})% of the time")
    """The pattern of ``describe``'s texts (see "descriptions" above)."""

    def describe(self) -> str:
        loop = ", ".join(_cell_text(c) for c in self.waypoints)
        return f"a patrolling agent that walks the loop {loop} and strays {_percent(self.noise)}% of the time"

    @classmethod
    def from_description(cls, groups: dict) -> Patrol:
        return cls(_cells(groups["patrol_loop"]), _fraction(groups["patrol_noise"]))

    def to_json(self) -> dict:
        return {"kind": self.kind, "waypoints": [list(c) for c in self.waypoints], "noise": self.noise}


@dataclass(frozen=True)
class Collector:
    """Collects gems of the colours ``order`` in turn: it wants ``order[phase]`` and advances its
    phase (cyclically) when it collects a gem of that colour."""

    order: tuple[str, ...]
    """At least two colour names; consecutive colours differ."""
    style: str = "focused"
    """'focused', 'casual' or 'erratic' (the inverse temperature, from STYLES)."""

    kind = "collector"

    def __post_init__(self):
        if isinstance(self.order, (str, bytes)) or not hasattr(self.order, "__len__") or len(self.order) < 2:
            raise ValueError(f"order must be a list of at least two colour names, got {self.order!r}")
        order = tuple(self.order)
        for i, c in enumerate(order):
            _one_of(f"order[{i}]", c, COLOR_NAMES)
            if c == order[(i + 1) % len(order)]:
                raise ValueError(f"order[{i}] and the next colour are both {c}; give consecutive colours "
                                 "that differ")
        _one_of("style", self.style, tuple(STYLES))
        object.__setattr__(self, "order", order)

    @property
    def beta(self) -> float:
        return STYLES[self.style]

    description = (rf"an? (?P<collector_style>{_STYLE}) collector that collects "
                   rf"(?P<collector_order>(?:{_COLOR}) gems(?:, then (?:{_COLOR}) gems)+), in turn")
    """The pattern of ``describe``'s texts (see "descriptions" above)."""

    def describe(self) -> str:
        turn = ", then ".join(f"{c} gems" for c in self.order)
        return f"{_style_article(self.style)} {self.style} collector that collects {turn}, in turn"

    @classmethod
    def from_description(cls, groups: dict) -> Collector:
        order = re.findall(_COLOR, groups["collector_order"].lower())
        return cls(tuple(order), groups["collector_style"].lower())

    def to_json(self) -> dict:
        return {"kind": self.kind, "order": list(self.order), "style": self.style}


@dataclass(frozen=True)
class Territorial:
    """Stays near ``home``; leaves it only for gems within ``radius`` (Manhattan) of home."""

    home: tuple[int, int]
    radius: int = 2
    style: str = "focused"
    """'focused', 'casual' or 'erratic' (the inverse temperature, from STYLES)."""

    kind = "territorial"

    def __post_init__(self):
        object.__setattr__(self, "home", _check_cell("home", self.home))
        if not _is_id(self.radius):
            raise ValueError(f"radius must be a non-negative integer, got {self.radius!r}")
        _one_of("style", self.style, tuple(STYLES))
        object.__setattr__(self, "radius", int(self.radius))

    @property
    def beta(self) -> float:
        return STYLES[self.style]

    description = (rf"an? (?P<territorial_style>{_STYLE}) territorial agent that stays near "
                   rf"(?P<territorial_home>{_CELL}) and leaves it only for gems within "
                   rf"(?P<territorial_radius>{_WHOLE}) steps? of it")
    """The pattern of ``describe``'s texts (see "descriptions" above)."""

    def describe(self) -> str:
        steps = "step" if self.radius == 1 else "steps"
        return (f"{_style_article(self.style)} {self.style} territorial agent that stays near "
                f"{_cell_text(self.home)} and leaves it only for gems within {self.radius} {steps} of it")

    @classmethod
    def from_description(cls, groups: dict) -> Territorial:
        (home,) = _cells(groups["territorial_home"])
        return cls(home, _whole(groups["territorial_radius"]), groups["territorial_style"].lower())

    def to_json(self) -> dict:
        return {"kind": self.kind, "home": list(self.home), "radius": self.radius, "style": self.style}


@dataclass(frozen=True)
class Contrarian:
    """Does the opposite of agent ``target``'s last move (up <-> down, left <-> right); when the
    target stayed, it moves away from the target."""

    target: int
    noise: float = 0.1
    """Probability of a uniformly random action instead."""

    kind = "contrarian"

    def __post_init__(self):
        _check_target_noise(self)

    description = (rf"a contrarian agent that does the opposite of agent (?P<contrarian_target>{_WHOLE})'s last "
                   rf"move and strays (?P<contrarian_noise>{_PERCENT})% of the time")
    """The pattern of ``describe``'s texts (see "descriptions" above)."""

    def describe(self) -> str:
        return (f"a contrarian agent that does the opposite of agent {self.target}'s last move "
                f"and strays {_percent(self.noise)}% of the time")

    @classmethod
    def from_description(cls, groups: dict) -> Contrarian:
        return cls(_whole(groups["contrarian_target"]), _fraction(groups["contrarian_noise"]))

    def to_json(self) -> dict:
        return {"kind": self.kind, "target": self.target, "noise": self.noise}


@dataclass(frozen=True)
class Explorer:
    """Prefers moves onto cells it has not stood on in its last ``memory`` steps."""

    memory: int = 4
    """How many of its most recent cells (the current one included) it avoids, >= 1."""
    style: str = "focused"
    """'focused', 'casual' or 'erratic' (the inverse temperature, from STYLES)."""

    kind = "explorer"

    def __post_init__(self):
        if not _is_id(self.memory) or self.memory < 1:
            raise ValueError(f"memory must be an integer >= 1, got {self.memory!r}")
        _one_of("style", self.style, tuple(STYLES))
        object.__setattr__(self, "memory", int(self.memory))

    @property
    def beta(self) -> float:
        return STYLES[self.style]

    description = (rf"an? (?P<explorer_style>{_STYLE}) explorer that avoids the last "
                   rf"(?:cell|(?P<explorer_memory>{_WHOLE}) cells?) it stood on")
    """The pattern of ``describe``'s texts (see "descriptions" above)."""

    def describe(self) -> str:
        cells = "cell" if self.memory == 1 else f"{self.memory} cells"
        return f"{_style_article(self.style)} {self.style} explorer that avoids the last {cells} it stood on"

    @classmethod
    def from_description(cls, groups: dict) -> Explorer:
        memory = groups.get("explorer_memory")
        return cls(1 if memory is None else _whole(memory), groups["explorer_style"].lower())

    def to_json(self) -> dict:
        return {"kind": self.kind, "memory": self.memory, "style": self.style}


FamilySpec = Patrol | Collector | Territorial | Contrarian | Explorer
FAMILIES = ("patrol", "collector", "territorial", "contrarian", "explorer")
"""The persona families beyond the trait basis, by kind name."""
FAMILY_CLASSES = {"patrol": Patrol, "collector": Collector, "territorial": Territorial,
                  "contrarian": Contrarian, "explorer": Explorer}

PersonaSpec = Trait | Species | Imitator | Mirror | Believer | Memoryless | FamilySpec
PERSONA_KINDS = ("trait", "species", "imitator", "mirror", "believer", "memoryless", *FAMILIES)


def persona_from_json(data: dict) -> PersonaSpec:
    """Inverse of ``to_json``; unknown kinds or fields raise ValueError."""
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"a persona spec must be a JSON object with a 'kind' field, got {data!r}")
    kind, rest = data["kind"], {k: v for k, v in data.items() if k != "kind"}
    _one_of("persona kind", kind, PERSONA_KINDS)
    cls = {"trait": Trait, "species": Species, "imitator": Imitator, "mirror": Mirror, "believer": Believer,
           "memoryless": Memoryless, **FAMILY_CLASSES}[kind]
    allowed = set(cls.__dataclass_fields__)
    unknown = set(rest) - allowed
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown, key=repr)} for a {kind} persona; "
                         f"allowed: {sorted(allowed)}")
    if kind == "species":
        probs = rest.get("probs", ())
        if not isinstance(probs, (list, tuple)):
            raise ValueError(f"probs must be a list of {N_ACTIONS} numbers, got {probs!r}")
        rest["probs"] = tuple(probs)
    if kind == "patrol" and isinstance(rest.get("waypoints"), list):
        rest["waypoints"] = tuple(tuple(c) if isinstance(c, list) else c for c in rest["waypoints"])
    if kind == "collector" and isinstance(rest.get("order"), list):
        rest["order"] = tuple(rest["order"])
    if kind == "territorial" and isinstance(rest.get("home"), list):
        rest["home"] = tuple(rest["home"])
    if kind == "imitator" and "own" in rest:
        rest["own"] = persona_from_json(rest["own"])
        if not isinstance(rest["own"], Trait):
            raise ValueError("own must be a trait persona")
    try:
        return cls(**rest)
    except TypeError as err:
        raise ValueError(f"bad {kind} persona {data!r}: {err}") from None


def personas_to_json(specs) -> str:
    return json.dumps([s.to_json() for s in specs])


def personas_from_json(text: str) -> tuple[PersonaSpec, ...]:
    return tuple(persona_from_json(d) for d in json.loads(text))
