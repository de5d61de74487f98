"""Prompts: what an agent is asked to do, as a seeded, validated space of natural-language texts.

Kinds
    SELF            "behave as yourself"
    DESCRIBE(h)     "behave as a focused agent that likes red gems and avoids others" (a trait
                    persona), "... likes red gems, remembers where it saw them and ignores others"
                    (a believer), "... likes red gems, forgets what it cannot see and ..." (its
                    memoryless control), or a persona family's own description ("a patrolling
                    agent that walks the loop (2, 2), (2, 8), (8, 8), (8, 2) and strays 10% of
                    the time"; each family's pattern sits beside its ``describe``)
    OTHER(k)        "behave as agent 3"
    SECOND(k)       "pretend to be agent 3 pretending to be you"
    RETURN(n, c, T) "collect 3 blue gems in the next 20 steps" (outcome conditioning, labelled in
                    hindsight from what the agent actually achieved)

A small grammar writes every meaning many ways (docs/prompts.md): each kind has *families*, a whole
verb or a whole frame with its forms ("imitate agent {k}", "do what agent {k} would do"); a form is
written with a *surface*: ids in digits or in words ("agent three"), several ways to name an agent
("the agent wearing 3"), and optional words before and after ("please", "ok,", "for a while"), so
the words that carry the meaning sit at many token positions. Families marked held out never appear
in training data; they are a test of reading, used only by the probes. ``PromptSpace`` samples
prompts with a passed-in generator and validates them; ``parse_prompt`` reads any form of the
grammar, with its surface, back into a ``Prompt``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cache

import numpy as np

from mirrorhall.agents.personas import (
    BELIEVER_MEMORY,
    FAMILY_CLASSES,
    LIKES_NONE,
    MAX_DIGITS,
    MEMORYLESS_MEMORY,
    STYLES,
    Believer,
    Collector,
    Contrarian,
    FamilySpec,
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
class Family:
    """A whole frame or a whole verb of one meaning kind, with its surface forms.

    Forms are templates without optional words: ``{k}`` is an agent id, always written
    "agent {k}" here (``AGENT_PHRASES`` gives the other ways to name an agent); ``{desc}`` a
    persona description; ``{n} {what} {horizon}`` a RETURN outcome. A held-out family never
    appears in training data: its words and frame are a test of reading, used only by probes.
    """

    name: str
    kind: Kind
    held_out: bool
    forms: tuple[str, ...]


def _families(kind: Kind, train: dict[str, tuple[str, ...]], held: dict[str, tuple[str, ...]]):
    return tuple(Family(f"{kind.name.lower()}/{name}", kind, h, forms)
                 for h, table in ((False, train), (True, held)) for name, forms in table.items())


FAMILIES: tuple[Family, ...] = (
    *_families(Kind.SELF, {
        "verb:behave-as": ("behave as yourself", "behave like yourself"),
        "verb:act-like": ("act like yourself", "act as yourself"),
        "verb:be": ("be yourself", "just be yourself"),
        "verb:play-as": ("play as yourself",),
        "frame:normally": ("do what you would normally do", "do what you normally do"),
        "frame:own-thing": ("do your own thing",),
        "frame:naturally": ("act naturally", "behave naturally"),
    }, {
        "frame:carry-on": ("carry on as you normally would", "carry on as usual"),
        "frame:true-to": ("stay true to yourself", "remain true to yourself"),
    }),
    *_families(Kind.DESCRIBE, {
        "verb:behave-as": ("behave as {desc}", "behave like {desc}"),
        "verb:act-like": ("act like {desc}", "act as {desc}"),
        "verb:be": ("be {desc}",),
        "frame:play": ("play {desc}", "play the role of {desc}"),
    }, {
        "frame:pretend-you-are": ("pretend you are {desc}",),
        "frame:you-are": ("you are {desc}", "you are now {desc}"),
    }),
    *_families(Kind.OTHER, {
        "verb:behave-as": ("behave as agent {k}", "behave like agent {k}"),
        "verb:act-like": ("act like agent {k}", "act as agent {k}"),
        "verb:imitate": ("imitate agent {k}",),
        "verb:be": ("be agent {k}",),
        "frame:do-what": ("do what agent {k} would do", "do what agent {k} does"),
        "frame:role": ("play the role of agent {k}", "take the role of agent {k}"),
        "frame:the-one": ("agent {k} is the one to imitate", "agent {k} is the one to play"),
    }, {
        "verb:copy": ("copy agent {k}",),
        "verb:mimic": ("mimic agent {k}",),
        "frame:the-way": ("act the way agent {k} acts", "behave the way agent {k} behaves"),
    }),
    *_families(Kind.SECOND, {
        "frame:pretending": ("pretend to be agent {k} pretending to be you", "be agent {k} pretending to be you"),
        "frame:would-if": ("behave as agent {k} would if it were imitating you",
                           "act as agent {k} would if it were imitating you"),
        "verb:imitating": ("act like agent {k} imitating you", "behave as agent {k} imitating you",
                           "be agent {k} imitating you"),
        "frame:while": ("do what agent {k} would do while imitating you",),
    }, {
        "frame:impression": ("be agent {k} doing an impression of you",
                             "act like agent {k} doing an impression of you"),
        "verb:copying": ("be agent {k} copying you", "act like agent {k} copying you"),
        "verb:mimicking": ("be agent {k} mimicking you",),
    }),
    *_families(Kind.RETURN, {
        "verb:collect": ("collect {n} {what} in the next {horizon} steps", "collect {n} {what} within {horizon} steps"),
        "verb:gather": ("gather {n} {what} in the next {horizon} steps", "gather {n} {what} within {horizon} steps"),
        "verb:pick-up": ("pick up {n} {what} in the next {horizon} steps", "pick up {n} {what} within {horizon} steps"),
        "frame:horizon-first": ("in the next {horizon} steps, collect {n} {what}",
                                "within {horizon} steps, gather {n} {what}"),
    }, {
        "verb:get": ("get {n} {what} over the next {horizon} steps", "get {n} {what} in the next {horizon} steps"),
        "frame:before": ("collect {n} {what} before {horizon} steps have passed",),
    }),
)

CANONICAL: dict[Kind, str] = {
    Kind.SELF: "behave as yourself",
    Kind.DESCRIBE: "behave as {desc}",
    Kind.OTHER: "behave as agent {k}",
    Kind.SECOND: "pretend to be agent {k} pretending to be you",
    Kind.RETURN: "collect {n} {what} in the next {horizon} steps",
}
"""The canonical wording of each kind: the first form of its first family."""

AGENT_PHRASES = ("agent {k}", "agent number {k}", "the agent wearing {k}", "the agent labelled {k}")
"""Ways to name agent k in training; ids are written in digits or in words ("agent three")."""

FILLERS_BEFORE = ("please", "now", "ok,", "okay,", "alright,", "from now on,", "for a while,",
                  "for this round,", "hey,", "go on and")
"""Optional words seen in training before a prompt."""
FILLERS_AFTER = ("please", "now", "for a while", "from now on", "for now", "for the rest of the game",
                 "until told otherwise", "thanks", "if you can")
"""Optional words seen in training after a prompt."""

SURFACE_SIZE = 2 * len(AGENT_PHRASES) * (len(FILLERS_BEFORE) + 1) * (len(FILLERS_AFTER) + 1)
"""Surface codes: (numbers in words or digits, agent phrase, filler before or none, filler after
or none), mixed radix; code 0 is the plain form."""


def families(kind: Kind | None = None, held_out: bool | None = None) -> list[Family]:
    """The families of a kind (all kinds with None), train and held out (or one split)."""
    return [f for f in FAMILIES if (kind is None or f.kind == kind) and (held_out is None or f.held_out == held_out)]


@dataclass(frozen=True)
class Template:
    """One form of one family, as numbered within its kind (a prompt's ``template``)."""

    text: str
    family: str
    held_out: bool = False


TEMPLATES: dict[Kind, tuple[Template, ...]] = {
    kind: tuple(Template(form, f.name, f.held_out) for f in families(kind) for form in f.forms) for kind in Kind
}
"""Every form of every kind, train and held out; index 0 is the canonical form."""
assert all(TEMPLATES[k][0].text == CANONICAL[k] for k in Kind)
RETURN_HORIZONS = (10, 20)


def surface_code(words: bool = False, phrase: int = 0, before: int = 0, after: int = 0) -> int:
    """The code of a surface: ids in ``words``, agent phrase ``AGENT_PHRASES[phrase]``, filler
    ``FILLERS_BEFORE[before - 1]`` before (0: none) and ``FILLERS_AFTER[after - 1]`` after."""
    nb, na = len(FILLERS_BEFORE) + 1, len(FILLERS_AFTER) + 1
    return ((int(words) * len(AGENT_PHRASES) + phrase) * nb + before) * na + after


def surface_parts(code: int) -> tuple[bool, int, int, int]:
    """(words, phrase, before, after) of a surface code (``surface_code``)."""
    if not 0 <= code < SURFACE_SIZE:
        raise ValueError(f"surface code must be in 0..{SURFACE_SIZE - 1}, got {code}")
    nb, na = len(FILLERS_BEFORE) + 1, len(FILLERS_AFTER) + 1
    rest, after = divmod(code, na)
    rest, before = divmod(rest, nb)
    words, phrase = divmod(rest, len(AGENT_PHRASES))
    return bool(words), phrase, before, after


def sample_surface(rng: np.random.Generator, size=None) -> np.ndarray:
    """Surface codes of training prompts: numbers in words a quarter of the time, any agent phrase,
    a filler before half of the time and one after half of the time."""
    words = np.asarray(rng.random(size) < 0.25)
    phrase = rng.integers(len(AGENT_PHRASES), size=size)
    before = np.where(rng.random(size) < 0.5, 0, 1 + rng.integers(len(FILLERS_BEFORE), size=size))
    after = np.where(rng.random(size) < 0.5, 0, 1 + rng.integers(len(FILLERS_AFTER), size=size))
    nb, na = len(FILLERS_BEFORE) + 1, len(FILLERS_AFTER) + 1
    return ((words.astype(np.int64) * len(AGENT_PHRASES) + phrase) * nb + before) * na + after


_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0..99 in words ("twenty-one"); other numbers in digits."""
    if not 0 <= n < 100:
        return str(n)
    if n < 20:
        return _UNITS[n]
    tens, unit = divmod(n, 10)
    return _TENS[tens - 2] + (f"-{_UNITS[unit]}" if unit else "")


_PLACEHOLDER = re.compile(r"\{(\w*)\}")


def fill(template: str, *, target=None, trait=None, outcome=None, words: bool = False) -> str:
    """Render a template: {k} the target id, {desc} the trait's description, {n} {what}
    {horizon} the outcome (n, colour or 'any', horizon); numbers in words with ``words``."""
    num = number_words if words else str
    values = {}
    if target is not None:
        values["k"] = num(int(target))
    if trait is not None:
        values["desc"] = describe_trait(trait)
    if outcome is not None:
        n, color, horizon = outcome
        values.update(n=num(int(n)), what=outcome_words(int(n), color).split(" ", 1)[1], horizon=num(int(horizon)))
    for name in _PLACEHOLDER.findall(template):
        if name not in values:
            known = {"k": "target", "desc": "trait", "n": "outcome", "what": "outcome", "horizon": "outcome"}
            if name in known:
                raise ValueError(f"template {shorten(template)} needs {{{name}}}: pass {known[name]}=")
            raise ValueError(f"template {shorten(template)} has an unknown placeholder {{{name}}}; "
                             "use {k}, {desc}, {n}, {what} or {horizon}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class Prompt:
    """A validated prompt. ``text`` is what the model reads; the rest is what it means."""

    kind: Kind
    text: str
    target: int | None = None
    """The agent named by OTHER(k) and SECOND(k)."""
    trait: Trait | Believer | Memoryless | FamilySpec | None = None
    """The persona described by DESCRIBE(h): a trait persona, a believer or its control, or a
    persona of a family."""
    outcome: tuple[int, str, int] | None = None
    """RETURN: (number of gems, colour name or 'any', horizon in steps)."""
    template: int = 0
    """The form, numbered within its kind (``TEMPLATES[kind]``)."""
    held_out: bool = field(default=False)
    surface: int = 0
    """How it is written around its form (``surface_parts``): 0 is the plain form."""

    @property
    def family(self) -> str:
        return TEMPLATES[self.kind][self.template].family

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


def render(kind: Kind, template: int, *, target=None, trait=None, outcome=None, surface: int = 0) -> Prompt:
    """Build a prompt from a kind, a form index (``TEMPLATES[kind]``), its arguments and a surface
    code (``surface_code``: numbers in words, the agent phrase, optional words around it)."""
    kind = Kind(kind)
    temps = TEMPLATES[kind]
    if not 0 <= template < len(temps):
        raise ValueError(f"template must be in 0..{len(temps) - 1} for {kind.name}, got {template}")
    t = temps[template]
    text, surface = _written(t.text, kind, surface, target=target, trait=trait if kind == Kind.DESCRIBE else None,
                             outcome=outcome if kind == Kind.RETURN else None)
    return Prompt(kind, text, target=target, trait=trait, outcome=outcome, template=template,
                  held_out=t.held_out, surface=surface)


def _written(form: str, kind: Kind, surface: int, **values) -> tuple[str, int]:
    """(text, surface code) of ``form`` filled with ``values`` (``fill``) and written with ``surface``.
    A surface only keeps what the form's kind uses (ids in words, the agent phrase), so each text
    has one code."""
    words, phrase, before, after = surface_parts(surface)
    words = words and kind in (Kind.OTHER, Kind.SECOND, Kind.RETURN)
    phrase = phrase if kind in (Kind.OTHER, Kind.SECOND) else 0
    text = fill(form.replace("agent {k}", AGENT_PHRASES[phrase]), words=words, **values)
    text = " ".join(x for x in (FILLERS_BEFORE[before - 1] if before else "", text,
                                FILLERS_AFTER[after - 1] if after else "") if x)
    return text, surface_code(words, phrase, before, after)


class PromptSpace:
    """Prompts for a scene of ``n_agents`` agents and ``n_colors`` colours, sampled reproducibly.

    ``split`` "train" samples the training families' forms, "held_out" the held-out families'
    and "all" both; every sample also draws its surface (``sample_surface``).
    """

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
                        outcome=outcome, surface=int(sample_surface(rng)))
        self.validate(prompt)
        return prompt

    def validate(self, prompt: Prompt) -> Prompt:
        """Check a prompt against the scene; ValueError names what is wrong."""
        if prompt.target is not None and not 0 <= prompt.target < self.n_agents:
            raise ValueError(
                f"prompt {prompt.text!r} names agent {prompt.target}, which is not in the scene "
                f"(agents 0..{self.n_agents - 1})"
            )
        colors = (*COLOR_NAMES[: self.n_colors], LIKES_NONE)
        liked = (getattr(prompt.trait, "likes", LIKES_NONE),
                 *(prompt.trait.order if isinstance(prompt.trait, Collector) else ()))
        for color in liked:
            if color not in colors:
                raise ValueError(f"prompt {prompt.text!r}: colour {color} is not in this world")
        if isinstance(prompt.trait, Contrarian) and not prompt.trait.target < self.n_agents:
            raise ValueError(
                f"prompt {prompt.text!r} names agent {prompt.trait.target}, which is not in the scene "
                f"(agents 0..{self.n_agents - 1})"
            )
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
_TRAIT_DESC = (rf"an? (?P<style>{_STYLE}) agent that likes (?:(?P<likes>{_COLOR}) gems|no gem in particular)"
               rf"(?:, (?P<memory>{BELIEVER_MEMORY}|{MEMORYLESS_MEMORY}))? "
               r"and (?P<social>ignores others|approaches others|avoids others|follows agent (?P<follow>\d+))")
# every family's own pattern (``description`` beside its ``describe``), each in a group named by its kind
_DESC = "(?:" + "|".join([_TRAIT_DESC, *(rf"(?P<{kind}>{cls.description})" for kind, cls in FAMILY_CLASSES.items())]) + ")"


_NUM = r"\d+|(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:-(?:one|two|three|four|five|six|seven|eight|nine))?|" + "|".join(sorted(_UNITS, key=len, reverse=True))
assert all(p.endswith(" {k}") for p in AGENT_PHRASES)
_PHRASE = ("(?:" + "|".join(rf"(?P<p{j}>{re.escape(p[:-4])})" for j, p in enumerate(AGENT_PHRASES))
           + rf") (?P<k>{_NUM})")


def _fillers(table: tuple[str, ...]) -> str:
    return "|".join(rf"(?P<{n}{i}>{re.escape(f)})" for i, f in enumerate(table)
                    for n in [("b" if table is FILLERS_BEFORE else "a")])


def _pattern(template: str) -> re.Pattern:
    body = re.escape(template)
    body = body.replace(re.escape("agent {k}"), f"(?:{_PHRASE})").replace(re.escape("{desc}"), _DESC)
    body = body.replace(re.escape("{n}"), rf"(?P<n>{_NUM})").replace(re.escape("{horizon}"), rf"(?P<h>{_NUM})")
    body = body.replace(re.escape("{what}"), rf"(?:(?P<color>{_COLOR}) )?gems?").replace(r"\ ", " ")
    # matched against the stripped text: one run of optional spaces keeps matching linear in length
    return re.compile(rf"(?:(?:{_fillers(FILLERS_BEFORE)}) )?{body}(?: (?:{_fillers(FILLERS_AFTER)}))?\s*[.!]?",
                      re.IGNORECASE)


_PATTERNS = [(kind, i, _pattern(t.text)) for kind, temps in TEMPLATES.items() for i, t in enumerate(temps)]
_SOCIAL_WORDS = {"ignores others": "none", "approaches others": "approach", "avoids others": "avoid"}


def _number(text: str) -> int:
    if text.isdigit():
        return int(text)
    from mirrorhall.imitation.tokenizer import normalize

    return int(normalize(text))



@cache
def grammar_words() -> frozenset[str]:
    """Every word the prompt language writes (forms of every family, held-out ones included,
    agent phrases, optional words)."""
    texts = [form for f in FAMILIES for form in f.forms] + list(AGENT_PHRASES) + list(FILLERS_BEFORE + FILLERS_AFTER)
    return frozenset(w.strip(",.").lower() for t in texts for w in t.replace("{", " {").split() if not w.startswith("{"))


# --- prompts that name nothing --------------------------------------------------------------------

_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "z",
           "ch", "sh", "th", "st", "tr", "pl", "gr", "br", "cl", "fr", "sp", "wh", "qu")
_NUCLEI = ("a", "e", "i", "o", "u", "y", "ea", "ou", "ai", "oo", "ie")
_CODAS = ("", "", "n", "r", "s", "t", "l", "ck", "ng", "rd", "sh", "x", "m")
PROBE_NONSENSE_SHAPE = re.compile(r"^(?:[bdfgklmnprstvz][aeiou]){1,2}[bdfgklmnprstvz]$")
"""The shape of the ``language`` probe's nonsense control words; training's made-up words never
take it, so a control never asks a word that training used."""


def made_up_words(count: int, rng: np.random.Generator, known: set[str]) -> list[str]:
    """``count`` distinct made-up words of one to three syllables (onset and vowel) and an optional
    final consonant,
    none in ``known``, none a word of the prompt language (``grammar_words``, held-out families
    included) and none of the probe's control shape (``PROBE_NONSENSE_SHAPE``)."""
    out: list[str] = []
    grammar = grammar_words()
    while len(out) < count:
        word = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _NUCLEI[rng.integers(len(_NUCLEI))]
                       for _ in range(int(rng.integers(1, 4)))) + _CODAS[rng.integers(len(_CODAS))]
        if word not in known and word not in grammar and word not in out and not PROBE_NONSENSE_SHAPE.match(word):
            out.append(word)
    return out


UNREADABLE_KINDS = (Kind.SELF, Kind.OTHER, Kind.SECOND)
"""The kinds ``unreadable`` writes: the meanings whose arguments alone say what they are (SELF
names nothing; OTHER names an agent; SECOND names an agent and "you")."""


def unreadable(kind: Kind, count: int, rng: np.random.Generator, known: set[str], target: int | None = None,
               replace: float = 0.75) -> list[str]:
    """``count`` prompts of ``kind`` written partly in words nobody taught: a training form of the
    kind with each of its own words replaced by a made-up one (``made_up_words``) with probability
    ``replace`` (at least one word), written with a training surface (agent phrase, ids in words,
    optional words before and after). What the meaning names stays: SELF names nothing, so any of
    its words may go; OTHER keeps its agent (``target``); SECOND keeps its agent and "you".
    Training on these (``TrainConfig.unreadable``) teaches, for words never seen, that a prompt
    naming nothing asks the agent to be itself, one naming only agent k asks for k, and one naming
    agent k and "you" asks for k imitating it."""
    kind = Kind(kind)
    if kind not in UNREADABLE_KINDS:
        raise ValueError(f"unreadable prompts are written for {', '.join(k.name for k in UNREADABLE_KINDS)}, "
                         f"not {kind.name}")
    if (kind != Kind.SELF) != (target is not None):
        raise ValueError("unreadable: give target exactly for OTHER and SECOND")
    forms = [t.text for t in TEMPLATES[kind] if not t.held_out]
    kept = {Kind.SELF: set(), Kind.OTHER: {"agent", "{k}"}, Kind.SECOND: {"agent", "{k}", "you"}}[kind]
    out = []
    for _ in range(count):
        words = forms[rng.integers(len(forms))].split()
        free = np.array([w not in kept for w in words])
        swap = (rng.random(len(words)) < replace) & free
        swap[rng.choice(np.flatnonzero(free))] = True
        fresh = iter(made_up_words(int(swap.sum()), rng, known))
        form = " ".join(next(fresh) if s else w for w, s in zip(words, swap, strict=True))
        out.append(_written(form, kind, int(sample_surface(rng)), target=target)[0])
    return out


def shorten(text: str, limit: int = 80) -> str:
    """``repr`` of a text for an error message, cut to about ``limit`` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit + 2 else shown[:limit] + f"... ({len(text)} characters)"


def parse_prompt(text: str) -> Prompt:
    """Read a prompt text written in any template's words; ValueError lists what is understood."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a prompt must be a non-empty text, e.g. 'behave as yourself' or 'behave as agent 3'")
    stripped = " ".join(text.split())  # one space between words: the forms' own spacing
    for kind, i, pat in _PATTERNS:
        m = pat.fullmatch(stripped)
        if not m:
            continue
        g = m.groupdict()
        for key in ("k", "n", "h", "follow"):
            if g.get(key) and g[key].isdigit() and len(g[key]) > MAX_DIGITS:
                raise ValueError(f"prompt {shorten(text)}: the number {shorten(g[key], 12)} is too large")
        words = any(g.get(key) and not g[key].isdigit() for key in ("k", "n", "h"))
        phrase = next((j for j in range(len(AGENT_PHRASES)) if g.get(f"p{j}")), 0)
        before = next((j + 1 for j in range(len(FILLERS_BEFORE)) if g.get(f"b{j}")), 0)
        after = next((j + 1 for j in range(len(FILLERS_AFTER)) if g.get(f"a{j}")), 0)
        surface = surface_code(words, phrase, before, after)
        if kind == Kind.DESCRIBE and (family := next((f for f in FAMILY_CLASSES if g.get(f)), None)):
            try:
                spec = FAMILY_CLASSES[family].from_description(g)
            except ValueError as err:
                raise ValueError(f"prompt {shorten(text)}: {err}") from None
            return render(kind, i, trait=spec, surface=surface)
        if kind == Kind.DESCRIBE:
            social = g["social"].lower()
            follow = int(g["follow"]) if g.get("follow") else None
            trait = Trait((g["likes"] or LIKES_NONE).lower(),
                          "follow" if follow is not None else _SOCIAL_WORDS[social],
                          g["style"].lower(), follow)
            if g.get("memory"):  # a believer or its memoryless control
                cls = Believer if g["memory"].lower() == BELIEVER_MEMORY else Memoryless
                trait = cls(trait.likes, trait.social, trait.style)
            return render(kind, i, trait=trait, surface=surface)
        if kind == Kind.RETURN:
            return render(kind, i, outcome=(_number(g["n"]), (g["color"] or "any").lower(), _number(g["h"])),
                          surface=surface)
        if kind in (Kind.OTHER, Kind.SECOND):
            return render(kind, i, target=_number(g["k"]), surface=surface)
        return render(kind, i, surface=surface)
    raise ValueError(
        f"cannot read prompt {shorten(text)}; try 'behave as yourself', 'behave as agent 3', "
        "'pretend to be agent 3 pretending to be you', 'behave as a focused agent that likes red "
        "gems and avoids others' or 'collect 3 blue gems in the next 20 steps'"
    )

