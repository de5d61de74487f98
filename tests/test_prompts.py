"""The prompt language: families, the train / held-out split, surfaces, seeded sampling, parsing."""

from __future__ import annotations

import numpy as np
import pytest

from mirrorhall.agents.families import family_grid
from mirrorhall.agents.personas import (
    FAMILIES as FAMILY_NAMES,
)
from mirrorhall.agents.personas import (
    FAMILY_CLASSES,
    Believer,
    Collector,
    Contrarian,
    Explorer,
    Patrol,
    Territorial,
    Trait,
)
from mirrorhall.envs.core import WorldConfig
from mirrorhall.imitation.model_io import check_prompt
from mirrorhall.imitation.prompts import (
    AGENT_PHRASES,
    CANONICAL,
    FAMILIES,
    FILLERS_AFTER,
    FILLERS_BEFORE,
    SURFACE_SIZE,
    TEMPLATES,
    Kind,
    PromptSpace,
    families,
    fill,
    parse_prompt,
    render,
    surface_code,
    surface_parts,
)
from mirrorhall.imitation.tokenizer import Tokenizer, normalize, words

ARGS = {Kind.SELF: {}, Kind.DESCRIBE: {"trait": Trait("red", "avoid", "focused")},
        Kind.OTHER: {"target": 3}, Kind.SECOND: {"target": 3}, Kind.RETURN: {"outcome": (2, "blue", 20)}}


def _meaning_words(family) -> set[str]:
    """The words a family's forms hold beyond placeholders."""
    return {w for form in family.forms for w in words(form.replace("{", " ").replace("}", " "))} - {
        "k", "desc", "n", "what", "horizon"}


def test_every_kind_has_train_and_held_out_families_and_a_canonical_first_form():
    for kind in Kind:
        train, held = families(kind, held_out=False), families(kind, held_out=True)
        assert len(train) >= 4 and len(held) >= 2, kind
        assert TEMPLATES[kind][0].text == CANONICAL[kind] == train[0].forms[0]
    assert len({f.name for f in FAMILIES}) == len(FAMILIES)


def test_held_out_families_never_appear_in_training():
    """Disjoint: no training form contains a held-out form, and each held-out family holds a word
    (its verb or its frame's words) that no training form, surface or filler holds."""
    train_forms = [t.text for k in Kind for t in TEMPLATES[k] if not t.held_out]
    descriptions = [Trait("red", "avoid", "focused").describe(), Trait("none", "approach", "erratic").describe()]
    train_words = {w for text in [*train_forms, *AGENT_PHRASES, *FILLERS_BEFORE, *FILLERS_AFTER, *descriptions]
                   for w in words(text.replace("{", " ").replace("}", " "))}
    for fam in families(held_out=True):
        for form in fam.forms:
            assert not any(form in t or t == form for t in train_forms), (fam.name, form)
        own = _meaning_words(fam) - train_words
        assert own or fam.name.endswith(("pretend-you-are", "you-are")), fam.name
    # the training tokenizer has never read a held-out family's own words
    vocab = set(Tokenizer.default().vocab)
    for fam in families(held_out=True):
        assert (_meaning_words(fam) - train_words) <= (_meaning_words(fam) - vocab)


def test_training_samples_only_training_families_and_the_same_seed_gives_the_same_prompts():
    space = PromptSpace(8, 4, split="train")
    draws = []
    for seed in (5, 5, 6):
        rng = np.random.default_rng(seed)
        draws.append([space.sample(k, rng, **ARGS[k]).text for k in Kind for _ in range(200)])
    assert draws[0] == draws[1] and draws[0] != draws[2]
    for text in draws[0]:
        assert not parse_prompt(text).held_out
    held = PromptSpace(8, 4, split="held_out")
    rng = np.random.default_rng(0)
    assert all(held.sample(k, rng, **ARGS[k]).held_out for k in Kind for _ in range(50))


def test_meaning_words_sit_at_many_token_positions():
    """Fillers and agent phrases move the words that carry the meaning: 'agent' and 'yourself'
    appear at five or more token positions over training draws."""
    space = PromptSpace(8, 4)
    rng = np.random.default_rng(1)
    where: dict[str, set[int]] = {"agent": set(), "yourself": set(), "you": set()}
    for _ in range(2000):
        kind = Kind(int(rng.integers(len(Kind))))
        for i, w in enumerate(words(space.sample(kind, rng, **ARGS[kind]).text)):
            if w in where:
                where[w].add(i)
    assert all(len(p) >= 5 for p in where.values()), where


@pytest.mark.parametrize("kind", list(Kind))
def test_every_form_and_surface_reads_back_to_its_meaning(kind):
    args = ARGS[kind] if kind != Kind.DESCRIBE else {"trait": Believer("green", "approach", "casual")}
    for i in range(len(TEMPLATES[kind])):
        for code in range(0, SURFACE_SIZE, 7):
            prompt = render(kind, i, surface=code, **args)
            back = parse_prompt(prompt.text)
            assert back == prompt, (prompt, back)
            assert back.family == TEMPLATES[kind][i].family


def test_ids_in_words_digits_and_phrases_name_the_same_agent():
    for text in ("behave as agent 3", "behave as agent three", "please behave as agent number three",
                 "ok, behave as the agent wearing 3 for a while", "BEHAVE  as the agent labelled Three!"):
        p = parse_prompt(text)
        assert (p.kind, p.target, p.template) == (Kind.OTHER, 3, 0), text
        assert check_prompt(text, 4) == text
        with pytest.raises(ValueError, match="names agent 3, which is not in the scene"):
            check_prompt(text, 3)
    p = parse_prompt("collect twenty-one red gems in the next twenty steps")
    assert p.outcome == (21, "red", 20) and surface_parts(p.surface)[0]
    assert normalize("Agent Forty-Two") == "agent 42" and words("twentyone someone") == ["twentyone", "someone"]


def test_surface_codes_round_trip_and_fill_names_what_is_missing():
    for code in range(SURFACE_SIZE):
        assert surface_code(*surface_parts(code)) == code
    with pytest.raises(ValueError, match="surface code"):
        surface_parts(SURFACE_SIZE)
    assert fill("copy agent {k}", target=2) == "copy agent 2"
    assert fill("copy agent {k}", target=2, words=True) == "copy agent two"
    with pytest.raises(ValueError, match=r"needs \{k\}: pass target="):
        fill("copy agent {k}")
    with pytest.raises(ValueError, match=r"unknown placeholder \{id\}"):
        fill("copy agent {id}", target=1)


def test_docs_list_every_family_with_its_split_and_forms():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "prompts.md").read_text()
    for fam in FAMILIES:
        row = (f"| `{fam.name}` | {'held out' if fam.held_out else 'train'} | {len(fam.forms)} | "
               + "; ".join(f'"{x}"' for x in fam.forms) + " |")
        assert row in doc, row
    for filler in (*FILLERS_BEFORE, *FILLERS_AFTER, *(p.replace("{k}", "3") for p in AGENT_PHRASES)):
        assert f'"{filler}"' in doc, filler


# --- descriptions of the persona families ---------------------------------------------------------

OFF_GRID = {  # specs beyond the grids: other lengths, singular words, noises that need decimals
    "patrol": [Patrol(((1, 1), (9, 1), (9, 9)), 0.05), Patrol(((3, 4), (5, 6)), 0.123), Patrol(((1, 2), (2, 1)), 0),
               Patrol(((1, 1), (1, 2), (2, 2), (2, 1), (3, 3)), 1.0), Patrol(((12, 30), (7, 0)), 1e-7),
               Patrol(((1, 1), (2, 2)), 1 / 3)],
    "collector": [Collector(("blue", "red", "green"), "erratic"), Collector(("pink", "cyan", "pink", "cyan")),
                  Collector(("yellow", "purple"), "casual")],
    "territorial": [Territorial((1, 1), 1, "erratic"), Territorial((5, 5), 0), Territorial((40, 2), 17, "casual")],
    "contrarian": [Contrarian(0, 0.0), Contrarian(63, 0.5), Contrarian(7, 0.015625)],
    "explorer": [Explorer(1, "casual"), Explorer(2), Explorer(40, "erratic")],
}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_description_reads_back_over_its_grid_and_every_surface(family):
    """Every persona of the family's grid (two worlds) and beyond it, in every DESCRIBE form (train
    and held out) and a spread of surfaces, parses back to the same spec, form and surface."""
    specs = [*family_grid(family, WorldConfig()), *family_grid(family, WorldConfig(n_agents=5, width=9, height=12)),
             *OFF_GRID[family]]
    specs, checked = list(dict.fromkeys(specs)), 0
    for j, spec in enumerate(specs):
        for i in range(len(TEMPLATES[Kind.DESCRIBE])):
            for code in range(j % 11, SURFACE_SIZE, 97):
                prompt = render(Kind.DESCRIBE, i, trait=spec, surface=code)
                back = parse_prompt(prompt.text)
                assert back == prompt and back.trait == spec and type(back.trait) is type(spec), (prompt, back)
                checked += 1
    assert checked >= len(specs) * len(TEMPLATES[Kind.DESCRIBE]) * 9 and len(specs) >= 9


def test_each_family_brings_its_own_description_pattern():
    """The grammar joins the families' own patterns: each names its groups after its kind (so one
    alternation holds them all) and reads its own descriptions only."""
    import re

    for kind, cls in FAMILY_CLASSES.items():
        groups = re.compile(cls.description).groupindex
        assert groups and all(g.startswith(kind + "_") for g in groups), kind
        example = family_grid(kind, WorldConfig())[0]
        for other, other_cls in FAMILY_CLASSES.items():
            assert bool(re.fullmatch(other_cls.description, example.describe())) == (other == kind), (kind, other)
    # a description in capitals, with odd spacing and a filler, is still read
    p = parse_prompt("Please  BEHAVE as an ERRATIC collector that collects Red gems, then blue gems, in turn !")
    assert p.trait == Collector(("red", "blue"), "erratic") and p.template == 0


@pytest.mark.parametrize("text, match", [
    ("behave as a patrolling agent that walks the loop (2, 2), (2, 2) and strays 10% of the time", "same cell"),
    ("behave as a patrolling agent that walks the loop (2, 2), (3, 2) and strays 150% of the time",
     r"noise must be a number in \[0, 1\], got 1.5"),
    ("behave as a contrarian agent that does the opposite of agent 1234567890's last move and strays 10% of "
     "the time", "the number 1234567890 is too large"),
    ("be a focused collector that collects red gems, then red gems, in turn", "differ"),
    ("be a focused territorial agent that stays near (3, 99999999999) and leaves it only for gems within 2 "
     "steps of it", "too large"),
])
def test_family_descriptions_that_no_persona_has_are_refused_with_the_reason(text, match):
    with pytest.raises(ValueError, match=match) as err:
        parse_prompt(text)
    assert str(err.value).startswith("prompt ") and len(str(err.value)) < 300


def test_family_descriptions_are_checked_against_the_scene():
    space = PromptSpace(4, 2)
    ok = render(Kind.DESCRIBE, 0, trait=Collector(("red", "green")))
    assert space.validate(ok) is ok
    with pytest.raises(ValueError, match="colour blue is not in this world"):
        space.validate(render(Kind.DESCRIBE, 0, trait=Collector(("red", "blue"))))
    with pytest.raises(ValueError, match="names agent 4, which is not in the scene"):
        space.validate(render(Kind.DESCRIBE, 0, trait=Contrarian(4)))
    assert space.validate(render(Kind.DESCRIBE, 0, trait=Contrarian(3))).trait == Contrarian(3)


def test_docs_give_one_description_per_family_that_reads_back_to_its_grid():
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "prompts.md").read_text()
    for family in FAMILY_NAMES:
        (text,) = re.findall(rf'^\| {family} \| "([^"]+)" \|', doc, flags=re.MULTILINE)
        prompt = parse_prompt(text)
        assert prompt.text == text and prompt.kind == Kind.DESCRIBE and prompt.template == 0
        assert prompt.trait in family_grid(family, WorldConfig()), text
