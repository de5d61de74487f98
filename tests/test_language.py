"""Wordings of the user's own, the self probe and the language probe: their maths checked with
oracle models (one that reads meaning exactly, one that keys on token position only, Bayes and
prior-only observers), so each probe is shown able to pass and able to fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mirrorhall.agents.bayes import HypothesisSet
from mirrorhall.agents.personas import Trait
from mirrorhall.agents.populations import get_population
from mirrorhall.analysis import imitate, language, self_probe
from mirrorhall.analysis.common import ModelProbe, Wordings, slope_ci
from mirrorhall.analysis.report import read_result, write_report
from mirrorhall.errors import ConfigError
from mirrorhall.imitation.prompts import CANONICAL, Kind, Prompt, families, parse_prompt
from mirrorhall.imitation.tokenizer import normalize

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "checkpoints" / "reference"
POP = "lab"
needs_reference = pytest.mark.skipif(not (REFERENCE / "checkpoint.json").exists(), reason="reference checkpoint not built")


@pytest.fixture(scope="module", autouse=True)
def few_rollouts():
    """RETURN labels from fewer continuations than the probe's (each oracle reads the same ones)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(language, "ROLLOUTS", 64)
        yield


class LabelOracle(ModelProbe):
    """Answers every query with the label of the meaning ``read(text)`` returns (``None``: uniform),
    computed exactly as hindsight labelling does (``language.meaning_labels``)."""

    def read(self, text: str) -> Prompt | None:
        raise NotImplementedError

    def query(self, scene, world, agent, t, prompts, situation=None):
        world, agent, t = (np.asarray(x, dtype=np.int64) for x in (world, agent, t))
        hyp = get_population(POP).hypotheses(scene.config.n_colors, scene.config.n_agents)
        out = np.full((world.size, 5), 0.2)
        for key in set(zip(prompts, t.tolist(), strict=True)):
            sel = np.flatnonzero([(p, tt) == key for p, tt in zip(prompts, t.tolist(), strict=True)])
            meaning = self.read(key[0])
            if meaning is not None:
                out[sel] = language.meaning_labels(scene, world[sel], agent[sel], key[1], meaning, hyp)
        return out


class MeaningOracle(LabelOracle):
    """Reads a prompt by its meaning: ``parse_prompt`` (any form of the grammar, with fillers)."""

    def read(self, text):
        try:
            return parse_prompt(text)
        except ValueError:
            return None


class PositionOracle(LabelOracle):
    """Keys on token position only, as issue 13 found the reference does: "agent" among the first
    three tokens means OTHER(the number after it), anything else SELF."""

    def read(self, text):
        tokens = normalize(text).replace(",", " ").split()
        if "agent" in tokens[:3]:
            i = tokens.index("agent")
            return Prompt(Kind.OTHER, text, target=int(tokens[i + 1]))
        return Prompt(Kind.SELF, text)


class SelfBayesOracle(ModelProbe):
    """Answers "behave as yourself" in agent i's seat with the Bayes (or prior-only) predictive of
    i from its own first t steps, by plain loops."""

    def __init__(self, reference, use_data: bool):
        super().__init__(reference)
        c = self.model.config.n_colors
        self.hyp = HypothesisSet([Trait(*x) for x in get_population(POP).combos(c, "train") if x[1] != "follow"], c, 8)
        self.use_data = use_data

    def query(self, scene, world, agent, t, prompts, situation=None):
        out = []
        for w, i, tt in zip(world, agent, t, strict=True):
            logp = self.hyp.log_prior.copy()
            for tau in range(int(tt) if self.use_data else 0):
                logp = logp + self.hyp.log_probs(scene.situation(tau, np.array([w]), np.array([i])))[0][
                    :, scene.episode.actions[tau, w, i]]
            post = np.exp(logp - logp.max())
            out.append((post / post.sum()) @ self.hyp.probs(scene.situation(int(tt), np.array([w]), np.array([i])))[0])
        return np.array(out)


# --- wordings -------------------------------------------------------------------------------------


def test_wordings_are_checked_with_one_line_errors():
    w = Wordings("imitate", "behave as agent {k}", fills=("k",), needs=("k",))
    assert w.all(["copy agent {k}"]) == ("behave as agent {k}", "copy agent {k}")
    for text, message in (("copy him", "has no {k}; probe imitate puts the target's id there"),
                          ("copy {desc}", "probe imitate cannot fill {desc}; it fills {k}"),
                          ("copy {k", "unbalanced braces"), ("copy {k!r}", "cannot fill {k!r}"),
                          ("  ", "must be a non-empty text")):
        with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")) as err:
            w.check([text])
        assert "\n" not in str(err.value)
    outcome = Wordings("outcome", CANONICAL[Kind.RETURN], fills=("n", "what", "horizon"), needs=("n", "what"))
    assert outcome.check(["get {n} {what}"]) == ("get {n} {what}",)
    with pytest.raises(ConfigError, match=r"has no \{what\}"):
        outcome.check(["get {n} gems"])


def test_slope_interval_is_the_least_squares_slope_of_the_means():
    s = slope_ci([0, 1, 2], [[0.0, 0.0], [2.0, 2.0], [2.0, 6.0]])
    assert s["mean"] == pytest.approx(2.0) and s["n"] == 6
    assert s["ci95"][0] <= 2.0 <= s["ci95"][1] and s["ci95"][1] - s["ci95"][0] > 0.5
    assert slope_ci([1], [[1.0]])["mean"] is None


@needs_reference
def test_wordings_run_on_the_canonical_scenes_and_change_no_canonical_figure(reference_probe):
    plain = imitate.run(reference_probe, POP, episodes=7, seed=2, ks=(0, 5, 10), closed_loop=False)
    worded = imitate.run(reference_probe, POP, episodes=7, seed=2, ks=(0, 5, 10), closed_loop=False,
                         prompts=("behave as agent {k}", "behave as agent {k} pretending to be you"))
    entries = worded.pop("prompts")
    assert [e["prompt"] for e in entries] == ["behave as agent {k}"] * 2 + ["behave as agent {k} pretending to be you"]
    assert [e["prompt"] for e in plain.pop("prompts")] == ["behave as agent {k}"]
    assert json.dumps(plain) == json.dumps(worded)  # the user's wordings change nothing else
    canon = {c["K"]: c["fraction"] for c in worded["conditions"] if c["K"] > 0}
    assert entries[0]["fraction"] == entries[1]["fraction"] == {str(k): v for k, v in canon.items()}
    assert entries[2]["fraction"]["10"]["mean"] != pytest.approx(canon[10]["mean"], abs=1e-3)


# --- the self probe -------------------------------------------------------------------------------


@needs_reference
def test_self_probe_bayes_oracle_scores_one_and_prior_oracle_zero():
    bayes = self_probe.run(SelfBayesOracle(REFERENCE, True), POP, episodes=7, seed=3, ks=(0, 1, 5, 10))
    prior = self_probe.run(SelfBayesOracle(REFERENCE, False), POP, episodes=7, seed=3, ks=(0, 1, 5, 10))
    for b, p in zip(bayes["conditions"][1:], prior["conditions"][1:], strict=True):
        assert b["fraction"]["mean"] == pytest.approx(1.0, abs=1e-9)
        assert p["fraction"]["mean"] == pytest.approx(0.0, abs=1e-9)
        assert b["ce_bayes"]["mean"] < b["ce_prior"]["mean"]
    assert bayes["prompts"][0]["fraction"]["10"]["mean"] == pytest.approx(1.0, abs=1e-9)


# --- the language probe ---------------------------------------------------------------------------


def test_controls_keep_shape_and_values_and_are_seeded():
    rng = np.random.default_rng(0)
    template = CANONICAL[Kind.SECOND]
    nonsense, scrambled = language.controls(template, rng)
    words, new = template.split(), nonsense.split()
    assert len(new) == len(words) and new[3:5] == ["agent", "{k}"]  # same count; the agent's name in place
    assert not set(new[:3] + new[5:]) & language.grammar_words()
    assert sorted(scrambled.split()) == sorted(words) and scrambled != template
    assert "agent {k}" in scrambled  # the agent's name moves as one unit
    again = language.controls(template, np.random.default_rng(0))
    assert again == (nonsense, scrambled)
    rows = language.wordings(Kind.OTHER, np.random.default_rng(1))
    assert rows[0] == {"role": "canonical", "family": None, "prompt": "behave as agent {k}"}
    held = {r["family"] for r in rows if r["role"] == "held_out"}
    assert held == {f.name for f in families(Kind.OTHER, held_out=True)}


@pytest.fixture(scope="module")
def meaning_result():
    if not (REFERENCE / "checkpoint.json").exists():
        pytest.skip("reference checkpoint not built")
    kinds = (Kind.SELF, Kind.OTHER, Kind.SECOND, Kind.DESCRIBE)
    return language.run(MeaningOracle(REFERENCE), POP, episodes=21, seed=0, kinds=kinds)


def test_language_probe_passes_a_model_that_reads_meaning(meaning_result):
    """Exact labels from the parsed meaning: every held-out form and every filler scores exactly as
    the canonical template, and minimal pairs are discriminated every time."""
    r = meaning_result
    mp = r["minimal_pairs"]
    assert mp["accuracy"]["mean"] == 1.0 and mp["situations"] >= 5
    for name, k in r["kinds"].items():
        rows = [c for c in r["conditions"] if c["kind"] == name]
        canon = rows[0]["figure"]["mean"]
        for c in rows:
            if c["role"] == "held_out" or c["role"].startswith("filler"):
                assert c["figure"]["mean"] == pytest.approx(canon, abs=1e-12), (name, c["prompt"])
        assert k["filler_max_change"] == pytest.approx(0.0, abs=1e-12)
    # the controls are not understood (uniform answers): far below the meaning, and said so
    for name in ("SELF", "OTHER"):
        k = r["kinds"][name]
        assert all(h["ratio"] == pytest.approx(1.0) for h in k["held_out"])
        assert all(not c["like_meaning"] and "the words matter" in c["words"] for c in k["controls"])
        assert all(c["mean"] < 0.5 * k["canonical"] for c in k["controls"])
    assert r["summary"]["minimal_pair_accuracy"] == 1.0
    # the best reader that watches k: its OTHER answer is the Bayes observer's estimate, the rest exact
    assert mp["ceiling"]["mean"] == pytest.approx(0.75 + mp["bayes_other"]["mean"] / 4)
    assert mp["bayes_other"]["n"] == mp["situations"] and mp["bayes_other"]["mean"] <= mp["members"]["OTHER"]["mean"]


def test_return_label_is_the_action_taken_given_the_outcome_reached():
    """RETURN(n, colour, h)'s label is pi(a) P(n | a) normalised, P(n | a) from continuations of the
    replayed scene. Over one step in a one-agent world (so no other agent contests a gem) with the
    persona known, P(1 | a) is 1 where move a lands on a gem of that colour and 0 elsewhere: checked
    against stepping the recorded state; an outcome no move reaches has no label (NaN)."""
    from mirrorhall.agents.bayes import HypothesisSet
    from mirrorhall.agents.cast import trait_probs
    from mirrorhall.agents.scene import run_scene
    from mirrorhall.analysis.common import Scene
    from mirrorhall.envs.core import WorldConfig, WorldCore

    cfg = WorldConfig(n_agents=1, n_colors=2, width=5, height=5, gems_per_color=2, max_cycles=8)
    trait = Trait("red", "none", "casual")
    b, t = 12, 4
    scene = Scene.from_episode(run_scene(cfg, [[trait]] * b, t, seed=3))
    hyp = HypothesisSet([trait], cfg.n_colors, 1)
    world, seat = np.arange(b), np.zeros(b, np.int64)
    pi = trait_probs(scene.situation(t, world, seat), hyp.likes, hyp.social, hyp.beta)  # (B, 5)
    core = WorldCore(cfg)
    lands = np.zeros((b, 5, cfg.n_colors), bool)
    for a in range(5):
        st = scene.states[t].copy()
        before = st.collected.copy()
        core.step(st, np.full((b, 1), a), np.random.default_rng(0))
        lands[:, a] = (st.collected - before)[:, 0] > 0
    labelled = 0
    for c, name in enumerate(cfg.color_names):
        label = language.return_labels(scene, world, seat, t, Prompt(Kind.RETURN, "", outcome=(1, name, 1)), hyp)
        reach = lands[..., c].any(1)
        assert (np.isnan(label).any(1) == ~reach).all()
        want = pi[reach] * lands[reach, :, c]
        np.testing.assert_allclose(label[reach], want / want.sum(1, keepdims=True), atol=1e-12)
        labelled += int(reach.sum())
        none = language.return_labels(scene, world, seat, t, Prompt(Kind.RETURN, "", outcome=(2, name, 1)), hyp)
        assert np.isnan(none).all()  # two gems of one colour in one step: never
    assert 0 < labelled < b * cfg.n_colors


def test_language_probe_fails_a_model_that_reads_token_positions():
    """The positional shortcut: OTHER whenever "agent" is among the first three tokens. It gets
    OTHER right and loses the other members: discrimination far below the 0.95 target."""
    if not (REFERENCE / "checkpoint.json").exists():
        pytest.skip("reference checkpoint not built")
    mp = language.minimal_pairs(PositionOracle(REFERENCE), POP, episodes=14, seed=0)
    assert mp["members"]["OTHER"]["mean"] == 1.0
    assert mp["accuracy"]["mean"] < 0.8 and mp["accuracy"]["ci95"][1] < 0.95, mp
    assert mp["members"]["RETURN"]["mean"] < 0.5 and mp["members"]["DESCRIBE"]["mean"] < 0.5


def test_language_result_reads_back_into_a_report(meaning_result, tmp_path):
    (tmp_path / "language.json").write_text(json.dumps(meaning_result))
    assert read_result(tmp_path / "language.json", "language")["probe"] == "language"
    text = write_report(tmp_path).read_text()
    assert "## language" in text and "Discrimination accuracy 1.000" in text and "met" in text
    bad = dict(meaning_result, kinds={"OTHER": {"figure": 3}})
    (tmp_path / "language.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="language.json"):
        read_result(tmp_path / "language.json", "language")


def test_pooled_seeds_weigh_scenes_narrow_the_interval_and_read_back(meaning_result, tmp_path):
    """``pool`` (``probe language --seeds N``): two copies of one result pool to the same means with
    intervals sqrt(2) narrower; verdicts and the summary are recomputed; the report reads it; a
    result with other wordings is refused; --seeds is the language probe's only."""
    r = meaning_result
    pooled = language.pool([r, r])
    assert pooled["seed"] == [r["seed"], r["seed"]] and pooled["episodes"] == 2 * r["episodes"]
    for a, b in zip(r["conditions"], pooled["conditions"], strict=True):
        fa, fb = a["figure"], b["figure"]
        if fa["mean"] is None or None in fa["ci95"]:
            continue
        assert fb["mean"] == pytest.approx(fa["mean"]) and fb["n"] == 2 * fa["n"]
        assert fb["ci95"][1] - fb["ci95"][0] == pytest.approx((fa["ci95"][1] - fa["ci95"][0]) / np.sqrt(2))
    assert pooled["summary"] == pytest.approx(r["summary"])
    assert pooled["minimal_pairs"]["situations"] == 2 * r["minimal_pairs"]["situations"]
    assert [p["summary"] for p in pooled["per_seed"]] == [r["summary"], r["summary"]]
    again = language.pool([pooled, pooled])  # two processes' pooled halves pool as their four seeds
    four = language.pool([r, r, r, r])
    assert again["seed"] == four["seed"] and len(again["per_seed"]) == 4
    for a, b in zip(again["conditions"], four["conditions"], strict=True):
        fa, fb = a["figure"], b["figure"]
        assert fa["n"] == fb["n"] and (fa["mean"] is None) == (fb["mean"] is None)
        if fa["mean"] is not None:
            assert [fa["mean"], *fa["ci95"]] == pytest.approx([fb["mean"], *fb["ci95"]])
    (tmp_path / "language.json").write_text(json.dumps(pooled))
    assert "Discrimination accuracy 1.000" in write_report(tmp_path).read_text()
    other = dict(r, conditions=r["conditions"][1:])
    with pytest.raises(ConfigError, match="same wordings"):
        language.pool([r, other])
    redrawn = dict(r, conditions=[dict(c, prompt=c["prompt"] + " zib") if c["role"] == "nonsense" else c
                                  for c in r["conditions"]])
    both = language.pool([r, redrawn])  # seeds draw their own controls: the row names both
    row = next(c for c in both["conditions"] if c["role"] == "nonsense")
    first = next(c for c in r["conditions"] if c["role"] == "nonsense")
    assert row["prompt"] == f"{first['prompt']} / {first['prompt']} zib"
    from mirrorhall.cli import main

    assert main(["probe", "imitate", "--checkpoint", str(REFERENCE), "--out", str(tmp_path / "x"), "--seeds", "2"]) == 2
    assert not (tmp_path / "x").exists()
