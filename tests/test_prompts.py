"""The prompt language: families, the train / held-out split, surfaces, seeded sampling, parsing."""

from __future__ import annotations

import numpy as np
import pytest

from mirrorhall.agents.personas import Believer, Trait
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
