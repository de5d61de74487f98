"""The n-gram tokenizer, the relative-position encoder, word dropout, and old checkpoints reading
as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from mirrorhall.cli import main
from mirrorhall.errors import CheckpointError, InputWarning
from mirrorhall.imitation.batches import PromptTable, make_batch
from mirrorhall.imitation.checkpoint import load_model, save_checkpoint
from mirrorhall.imitation.model import NEW_FIELDS, ModelConfig, MultiPolicyModel
from mirrorhall.imitation.model_io import encode_prompts, warn_unread
from mirrorhall.imitation.prompts import Kind, families
from mirrorhall.imitation.shards import Dataset
from mirrorhall.imitation.tokenizer import (
    NgramTokenizer,
    Tokenizer,
    bucket,
    char_ngrams,
    make_tokenizer,
)
from mirrorhall.imitation.train import MODEL_SIZES, TrainConfig, Trainer, load_episodes

NGRAM = NgramTokenizer.default()


def _model(tokenizer, positions="absolute", seed=0, ngram_scale=1.0) -> MultiPolicyModel:
    torch.manual_seed(seed)
    model = MultiPolicyModel(ModelConfig.for_tokenizer(tokenizer, positions=positions, **MODEL_SIZES["tiny"]))
    if tokenizer.buckets:  # the table starts at zero; give it values as training would
        with torch.no_grad():
            model.ngram_emb.weight[1:].normal_(0, ngram_scale)
    return model.eval()


# --- the tokenizer --------------------------------------------------------------------------------


def test_ngrams_have_boundary_marks_sizes_3_to_5_and_numbers_have_none():
    assert char_ngrams("as") == ["<as", "as>", "<as>"]
    grams = char_ngrams("agent")
    assert {len(g) for g in grams} == {3, 4, 5} and "<ag" in grams and "ent>" in grams and len(grams) == 12
    assert char_ngrams("3") == [] and char_ngrams("255") == []
    three = NGRAM.encode("agent three")[1]
    assert three == NGRAM.encode("agent 3")[1] and three[0] == NGRAM.index["3"] and not any(three[1:])
    assert len(three) == NGRAM.width == 33


def test_hash_is_the_same_in_every_process():
    """CRC-32, not Python's salted hash: another process with another hash seed gives the same rows."""
    code = ("import json; from mirrorhall.imitation.tokenizer import NgramTokenizer; "
            "print(json.dumps(NgramTokenizer.default().encode('mimic agent 3 impression')))")
    rows = []
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        rows.append(json.loads(out.stdout))
    assert rows[0] == rows[1] == NGRAM.encode("mimic agent 3 impression")
    assert bucket("imi", 2**14) == zlib.crc32(b"imi") % 2**14


def test_related_words_share_pieces_and_unseen_words_are_read_apart():
    a, b, c = (set(NGRAM.ngram_buckets(w)) for w in ("imitate", "imitating", "imitator"))
    assert len(a & b) >= 10 and len(a & c) >= 10 and len(a & b) / len(a | b) > 0.3
    assert len(set(NGRAM.ngram_buckets("imitate")) & set(NGRAM.ngram_buckets("red"))) == 0
    # held-out words are not in the vocabulary but each has its own pieces
    held = ["mimic", "copy", "impression", "mimicking", "copying"]
    assert all(w not in NGRAM.index for w in held)
    rows = [tuple(NGRAM.encode(w)[0]) for w in held]
    assert all(r[0] == 1 for r in rows) and len(set(rows)) == len(held)
    # ... and the model reads them as distinct vectors, where the word tokenizer has one <unk>
    ids = encode_prompts(NGRAM, held, 4)  # (5, 4, 33)
    vec = _model(NGRAM).embed_words(ids)[:, 0]  # (5, d)
    dist = torch.cdist(vec, vec)
    assert dist[~torch.eye(len(held), dtype=torch.bool)].min() > 0.1
    word = Tokenizer.default()
    wvec = _model(word).embed_words(encode_prompts(word, held, 4))[:, 0]
    assert torch.equal(wvec, wvec[:1].expand_as(wvec))
    # "mimicking" shares more with "imitating" (-ing, -ti-) than "copy" does
    imitating = set(NGRAM.ngram_buckets("imitating"))
    assert len(imitating & set(NGRAM.ngram_buckets("mimicking"))) > len(imitating & set(NGRAM.ngram_buckets("copy")))


def test_json_round_trip_and_one_line_errors():
    data = json.loads(json.dumps(NGRAM.to_json()))
    back = Tokenizer.from_json(data)
    assert isinstance(back, NgramTokenizer) and back == NGRAM and back.encode("mimic agent 3") == NGRAM.encode("mimic agent 3")
    assert Tokenizer.from_json(Tokenizer.default().to_json()) == Tokenizer.default()
    assert make_tokenizer("ngram") == NGRAM and make_tokenizer("word") == Tokenizer.default()
    bad = {
        "buckets": (dict(data, buckets=0), "buckets must be an integer in 1..16777216"),
        "buckets float": (dict(data, buckets=1.5), "buckets"),
        "hash": (dict(data, hash="python"), "hash must be 'crc32'"),
        "sizes": (dict(data, sizes=[5, 3]), "sizes must be"),
        "extra": (dict(data, extra=1), "exactly the fields"),
        "missing": ({k: v for k, v in data.items() if k != "max_ngrams"}, "exactly the fields"),
        "vocab": (dict(data, vocab=["a", "b"]), "must start with <pad>, <unk>"),
        "kind": (dict(data, kind="bpe"), "unknown tokenizer"),
    }
    for name, (value, message) in bad.items():
        with pytest.raises(ValueError, match=message) as err:
            Tokenizer.from_json(value)
        assert "\n" not in str(err.value), name
    with pytest.raises(ValueError, match="one of word, ngram"):
        make_tokenizer("bpe")


# --- the model ------------------------------------------------------------------------------------


def test_relative_positions_make_the_prompt_vector_independent_of_where_it_starts():
    """Padding put before a prompt shifts every word's position: with relative positions the
    vector is unchanged, with absolute positions it moves."""
    texts = ["behave as agent 3", "please do what agent 3 would do", "mimic the agent wearing 2 for a while"]
    for tok in (NGRAM, Tokenizer.default()):
        ids = encode_prompts(tok, texts, 12)
        shifted = torch.cat([torch.zeros_like(ids[:, :4]), ids[:, :8]], dim=1)  # 4 pads first, every word kept
        assert not ids[:, 8:].any()
        for positions, moved in (("relative", False), ("absolute", True)):
            model = _model(tok, positions)
            gap = (model.encode_prompts(ids) - model.encode_prompts(shifted)).abs().max()
            assert (gap > 0.05) if moved else (gap < 1e-4), (tok.kind, positions, float(gap))
    # order still matters under relative positions: swapping the words moves the vector far beyond
    # float rounding (an order-blind bag of words would move it by ~1e-7), while re-encoding the
    # same words does not move it at all
    model = _model(NGRAM, "relative")
    a, b, c = model.prompt_vectors(encode_prompts(NGRAM, ["agent 3 imitating you", "you imitating agent 3",
                                                          "agent 3 imitating you"], 8))
    assert (a - b).abs().max() > 1e-3 and (a - c).abs().max() < 1e-6, float((a - b).abs().max())


def _padded_prompt_vectors(model: MultiPolicyModel, tokens: torch.Tensor) -> torch.Tensor:
    """The relative encoder written out on the padded (P, L) layout: every word and padding place
    through every part, attention masking the padding. The model packs the words instead."""
    from mirrorhall.imitation.model import rotate

    words = tokens[..., 0] if tokens.dim() == 3 else tokens
    pad = words == 0
    pad[:, 0] &= ~pad.all(1)
    x, (p, length) = model.embed_words(tokens), words.shape
    enc = model.prompt_encoder
    for layer in enc.layers:
        d, h = x.shape[-1], layer.heads
        q, k, v = layer.qkv(layer.norm1(x)).view(p, length, 3, h, d // h).unbind(2)
        pos = torch.arange(length)
        scores = torch.einsum("pihd,pjhd->phij", rotate(q, pos), rotate(k, pos)) * (d // h) ** -0.5
        read = torch.einsum("phij,pjhd->pihd", scores.masked_fill(pad[:, None, None], float("-inf")).softmax(-1), v)
        x = x + layer.out(read.reshape(p, length, d))
        x = x + layer.ff(layer.norm2(x))
    x = enc.norm(x)
    read, _ = enc.pool(model.cls.expand(p, 1, -1), x, x, key_padding_mask=pad, need_weights=False)
    return model.prompt_norm(read[:, 0])


def test_rotation_by_tables_equals_the_pairwise_rotation():
    """The encoder rotates q and k laid flat (heads one after another) with contiguous products of
    two tables; that is ``rotate``'s pairwise rotation of each head, at every position."""
    from mirrorhall.imitation.model import quarter_turn, rotate, rotation_tables

    gen = torch.Generator().manual_seed(5)
    t, h, dh = 37, 4, 16
    pos = torch.randint(0, 24, (t,), generator=gen)
    for dtype in (torch.float32, torch.bfloat16):  # the same products and sums: bit for bit
        x = torch.randn(t, h, dh, generator=gen).to(dtype)
        cos, sin = (table.to(dtype) for table in rotation_tables(pos, h * dh, dh))
        flat = x.flatten(1)
        assert torch.equal(flat * cos + quarter_turn(flat) * sin, rotate(x, pos).flatten(1))
        assert not torch.allclose(flat * cos + quarter_turn(flat) * sin, rotate(x, pos + 1).flatten(1), atol=1e-2)


def test_relative_encoder_packs_the_words_and_equals_the_padded_layout():
    """The encoder runs its per-word parts on the words alone (no padding places): prompts of
    very different lengths, and one with no words at all, get the padded layout's vectors."""
    texts = ["behave as yourself", "please, for this round, go on and act like the agent wearing 2 for a while",
             "agent 3", "pretend to be agent 1 pretending to be you"]
    for tok in (NGRAM, Tokenizer.default()):
        model = _model(tok, "relative", seed=3)
        ids = torch.cat([encode_prompts(tok, texts, 24), torch.zeros_like(encode_prompts(tok, texts[:1], 24))])
        packed, padded = model.encode_prompts(ids), _padded_prompt_vectors(model, ids)
        assert packed.shape == (5, model.config.d_model)
        assert (packed - padded).abs().max() < 1e-5, (tok.kind, float((packed - padded).abs().max()))
        # and every prompt alone, in a layout of its own length, reads the same
        for row in range(4):
            alone = ids[row: row + 1, : int((ids[row, :, 0] if ids.dim() == 3 else ids[row]).ne(0).sum())]
            assert (model.encode_prompts(alone) - packed[row]).abs().max() < 1e-5


def test_model_config_reads_configs_saved_before_the_new_fields():
    cfg = ModelConfig.for_tokenizer(Tokenizer.default())
    old = {k: v for k, v in cfg.to_json().items() if k not in NEW_FIELDS}
    back = ModelConfig.from_json(old)
    assert back == cfg and back.ngram_buckets == 0 and back.positions == "absolute"
    with pytest.raises(ValueError, match=r"missing \['d_model'\]"):
        ModelConfig.from_json({k: v for k, v in old.items() if k != "d_model"})
    with pytest.raises(ValueError, match=r"unknown \['rope'\]"):
        ModelConfig.from_json(dict(old, rope=True))
    for field, value, message in (("ngram_buckets", -1, "ngram_buckets must be an integer in 0..16777216"),
                                  ("ngram_buckets", 2**25, "ngram_buckets"), ("ngram_buckets", True, "ngram_buckets"),
                                  ("positions", "learned", "positions must be one of absolute, relative")):
        with pytest.raises(ValueError, match=message):
            ModelConfig.from_json(dict(old, **{field: value}))


def test_ngram_checkpoint_round_trip_and_a_damaged_tokenizer_is_one_line(tmp_path):
    model = _model(NGRAM, "relative", ngram_scale=0.3)
    save_checkpoint(tmp_path / "ck", model, NGRAM, run_config={}, step=1)
    meta = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    assert meta["version"] == 2 and meta["tokenizer"]["kind"] == "ngram"
    assert meta["model_config"]["positions"] == "relative" and meta["model_config"]["ngram_buckets"] == 2**14
    loaded, tok, _ = load_model(tmp_path / "ck")
    assert tok == NGRAM
    ids = encode_prompts(tok, ["mimic agent 3", "behave as yourself"], 32)
    assert torch.equal(loaded.prompt_vectors(ids), model.prompt_vectors(ids))
    for change, message in ((dict(buckets=2**13), "tokenizer has 8192 n-gram buckets, model expects 16384"),
                            (dict(hash="fnv"), "hash must be 'crc32'")):
        meta["tokenizer"] = dict(NGRAM.to_json(), **change)
        (tmp_path / "ck" / "checkpoint.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match=message) as err:
            load_model(tmp_path / "ck")
        assert "\n" not in str(err.value)


def test_unseen_words_warn_in_one_line_naming_them_and_how_they_are_read():
    for tok, how in ((NGRAM, "only through its letter groups"), (Tokenizer.default(), "as an unknown word")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn_unread(tok, "please mimic agent three")
            warn_unread(tok, "please imitate agent three")
        assert len(caught) == 1 and caught[0].category is InputWarning
        text = str(caught[0].message)
        assert "'mimic'" in text and "does not know" in text and "never seen in training" in text and how in text and "\n" not in text


# --- training ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def episodes(tiny_dataset):
    data = Dataset(tiny_dataset)
    return data, load_episodes(data)


def test_prompt_table_keeps_word_rows_once_and_gives_the_encoder_its_ids(episodes):
    data, eps = episodes
    table = PromptTable(NGRAM, 32)
    ids = table.ids(eps[0])
    batch = make_batch([eps[0]], [np.arange(len(eps[0].kind))], table, full_view=True)
    want = encode_prompts(NGRAM, [eps[0].prompts[i] for i in eps[0].prompt_index], 32)
    assert torch.equal(batch.tokens, want)
    assert table.tokens.shape == (len(set(ids.tolist())), 32) and table.words.shape[1] == NGRAM.width
    assert table.words.shape[0] <= 1 + len({w for t in eps[0].prompts for w in t.split()}) + 8


def _plain_and(episodes, tmp_path, samples: int, **option):
    """(common config, a trainer without ``option``, one with it) on the n-gram tokenizer."""
    data, eps = episodes
    common = dict(data=str(data.root), out=str(tmp_path), size="tiny", episodes_per_batch=2,
                  samples_per_episode=samples, tokenizer="ngram", eval_fraction=0.0)
    plain = Trainer(TrainConfig(**common), eps, NGRAM, data.world.n_colors, full_view=True)
    return common, plain, Trainer(TrainConfig(**common, **option), eps, NGRAM, data.world.n_colors, full_view=True)


def test_word_dropout_is_seeded_spares_numbers_and_is_off_by_default(episodes, tmp_path):
    data, eps = episodes
    assert TrainConfig(data="d", out="o").word_dropout == 0.0
    common, plain, drop = _plain_and(episodes, tmp_path, 32, word_dropout=0.5)
    a, b, again = plain.batch(3), drop.batch(3), drop.batch(3)
    ta, tb = a.tokens, b.tokens  # (S, L, W)
    assert torch.equal(tb, again.tokens) and not torch.equal(ta, tb)
    assert torch.equal(ta[..., 1:], tb[..., 1:])  # n-grams kept
    changed = ta[..., 0] != tb[..., 0]
    assert (tb[..., 0][changed] == 1).all()
    frac = changed.sum() / ((ta[..., 0] > 1) & ~plain.keep[ta[..., 0]]).sum()
    assert 0.3 < float(frac) < 0.7
    numbers = plain.keep[ta[..., 0]] & (ta[..., 0] > 1)
    assert numbers.any() and torch.equal(ta[..., 0][numbers], tb[..., 0][numbers])
    with pytest.raises(ValueError, match="word_dropout must be in"):
        TrainConfig(data="d", out="o", word_dropout=1.0)
    # the word tokenizer's batches drop whole words too
    word = Tokenizer.default()
    wd = Trainer(TrainConfig(**dict(common, tokenizer="word"), word_dropout=0.5), eps, word, data.world.n_colors,
                 full_view=True)
    assert wd.batch(3).tokens.dim() == 2 and (wd.batch(3).tokens == 1).any()


def test_unreadable_asks_self_other_and_second_samples_in_made_up_words_seeded(episodes, tmp_path):
    """``--unreadable``: a share of the SELF, OTHER and SECOND samples (and only those) read a form
    of their kind with made-up words in it (OTHER and SECOND naming the sample's own agent, SECOND
    with "you" and OTHER without);
    the labels stay; the same step gives the same batch; every made-up word is unknown to the
    tokenizer, no word of the prompt language (held-out families included) and never of the
    language probe's control shape."""
    from mirrorhall.imitation.prompts import (
        PROBE_NONSENSE_SHAPE,
        grammar_words,
        number_words,
        parse_prompt,
        unreadable,
    )

    assert TrainConfig(data="d", out="o").unreadable == 0.0
    _, plain, asked = _plain_and(episodes, tmp_path, 96, unreadable=0.5)
    a, b, again = plain.batch(3), asked.batch(3), asked.batch(3)
    assert torch.equal(b.prompt, again.prompt) and torch.equal(a.label, b.label)
    text_a = {i: t for t, i in plain.prompts.index.items()}
    text_b = {i: t for t, i in asked.prompts.index.items()}
    before = [text_a[int(x)] for x in a.prompt]
    after = [text_b[int(y)] for y in b.prompt]
    changed = np.array([x != y for x, y in zip(before, after, strict=True)])
    asked_kinds = [int(Kind.SELF), int(Kind.OTHER), int(Kind.SECOND)]
    for kind in asked_kinds:
        rows = (a.kind == kind).numpy()
        assert 0.25 < (changed & rows).sum() / rows.sum() < 0.75, kind
    assert not (changed & ~np.isin(a.kind.numpy(), asked_kinds)).any()
    known = grammar_words() | set(NGRAM.vocab)
    for row in np.flatnonzero(changed):
        assert (b.tokens[row, :, 0] == 1).any()  # a word read through its n-grams alone
        if a.kind[row] in (int(Kind.OTHER), int(Kind.SECOND)):
            k = parse_prompt(before[row]).target
            words = after[row].removesuffix(" if you can").replace(",", "").split()  # the one filler with "you"
            assert ("you" in words) == (a.kind[row] == int(Kind.SECOND))
            assert str(k) in words or number_words(k) in words
    pool = unreadable(Kind.SELF, 400, np.random.default_rng(0), set(NGRAM.vocab))
    made_up = {w.strip(",") for t in pool for w in t.split()} - known
    assert len(made_up) > 300 and not any(PROBE_NONSENSE_SHAPE.match(w) for w in made_up)
    assert all(any(w.strip(",") in made_up for w in t.split()) for t in pool)
    assert pool == unreadable(Kind.SELF, 400, np.random.default_rng(0), set(NGRAM.vocab))
    second = unreadable(Kind.SECOND, 50, np.random.default_rng(1), set(), target=5)
    assert all(t.replace(",", "").split().count("you") >= 1 for t in second)
    assert all(" 5 " in f" {t} " or " five " in f" {t} " for t in second)
    with pytest.raises(ValueError, match="unreadable must be in"):
        TrainConfig(data="d", out="o", unreadable=1.0)
    with pytest.raises(ValueError, match="not DESCRIBE"):
        unreadable(Kind.DESCRIBE, 1, np.random.default_rng(0), set())
    with pytest.raises(ValueError, match="give target"):
        unreadable(Kind.OTHER, 1, np.random.default_rng(0), set())


def test_unreadable_draws_offer_each_batch_a_few_pool_entries_and_zero_keeps_every_sample_its_own(episodes, tmp_path):
    """``--unreadable-draws M``: each kind offers a batch at most M made-up prompts (per agent
    named), the same samples are asked them as without it, the same step gives the same batch,
    and the pool entries offered change from step to step; 0 (the default) draws as before."""
    assert TrainConfig(data="d", out="o").unreadable_draws == 0
    common, plain, few = _plain_and(episodes, tmp_path, 96, unreadable=0.5, unreadable_draws=2)
    data, eps = episodes  # the same pools as ``few`` (drawn from the same seed), every sample its own draw
    every = Trainer(TrainConfig(**common, unreadable=0.5), eps, NGRAM, data.world.n_colors, full_view=True)
    a, b, c = plain.batch(3), every.batch(3), few.batch(3)
    assert torch.equal(few.batch(3).prompt, c.prompt) and torch.equal(c.label, a.label)
    asked = {int(x) for x in torch.unique(b.prompt)} - {int(x) for x in torch.unique(a.prompt)}
    offered = {int(x) for x in torch.unique(c.prompt)} - {int(x) for x in torch.unique(a.prompt)}
    assert torch.equal(b.prompt != a.prompt, c.prompt != a.prompt)  # the same samples are asked
    pools = few.unreadable
    per_kind = {kind: {int(x) for x in pool.flatten()} for kind, pool in pools.items()}
    for kind, ids in per_kind.items():
        targets = pools[kind].shape[0] if pools[kind].dim() == 2 else 1
        assert 0 < len(offered & ids) <= 2 * targets, kind
    assert len(offered) < len(asked)
    later = {int(x) for x in torch.unique(few.batch(4).prompt)} - {int(x) for x in torch.unique(plain.batch(4).prompt)}
    assert later != offered
    with pytest.raises(ValueError, match="unreadable_draws must be an integer"):
        TrainConfig(data="d", out="o", unreadable_draws=-1)
    with pytest.raises(ValueError, match="give unreadable > 0"):
        TrainConfig(data="d", out="o", unreadable_draws=8)


@pytest.fixture(scope="module")
def ngram_run(tiny_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("ngram") / "run"
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run), "--size", "tiny", "--steps", "4",
                 "--eval-every", "2", "--checkpoint-every", "4", "--threads", "1", "--tokenizer", "ngram",
                 "--positions", "relative", "--word-dropout", "0.2", "--no-progress"]) == 0
    return run


def test_an_ngram_relative_run_trains_saves_and_reads_unseen_words(ngram_run):
    model, tok, meta = load_model(ngram_run)
    assert isinstance(tok, NgramTokenizer) and meta["run_config"]["word_dropout"] == 0.2
    # training moved the pieces of training words, so held-out wordings read differently from <unk>
    trained = model.ngram_emb.weight.abs().sum(1) > 0
    assert 0 < int(trained.sum()) < tok.buckets
    held = [f.forms[0].replace("{k}", "2") for f in families(Kind.OTHER, held_out=True)]
    vec = model.prompt_vectors(encode_prompts(tok, held, 32))
    assert torch.cdist(vec, vec)[~torch.eye(len(held), dtype=torch.bool)].min() > 0


def test_an_ngram_model_acts_from_observations_as_from_the_state(ngram_run):
    """The one way in carries (S, L, W) ids everywhere: acting from observations alone equals
    acting from the world state, with a held-out wording (which warns once, naming its words)."""
    from mirrorhall.envs import mirrorhall_v0
    from mirrorhall.envs.core import WorldCore
    from mirrorhall.imitation.model_io import ObservationActor
    from mirrorhall.imitation.policy import ModelPolicy

    model, tok, _ = load_model(ngram_run)
    prompts = ["mimic agent 2", "behave as yourself", "please imitate agent 0"]
    env = mirrorhall_v0.parallel_env(n_agents=3, max_cycles=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        actor = ObservationActor(model, tok, env.config, prompts)
    assert [str(w.message).count("'mimic'") for w in caught] == [1]
    policy = ModelPolicy(model, tok, WorldCore(env.config), range(3))
    with pytest.warns(InputWarning, match="'mimic'"):
        mstate = policy.initial_state(1, prompts)
    obs, _ = env.reset(seed=3)
    state = None
    for _ in range(5):
        flat = np.stack([obs[a] for a in env.agents])
        got, state = actor.probs(flat, state)
        feats, vis = policy.features(env.world_state)
        np.testing.assert_allclose(got, policy.probs(mstate, feats, vis)[0], atol=1e-6, rtol=0)
        actions = got.argmax(-1)
        obs, *_ = env.step({a: int(x) for a, x in zip(env.agents, actions, strict=True)})
        mstate = policy.observe(mstate, feats, vis, actions[None])


VERSION_1 = Path(__file__).resolve().parents[1] / "checkpoints" / "reference-v1"


def test_a_version_1_checkpoint_reads_as_before():
    """checkpoints/reference-v1 (the reference shipped before the prompt grammar: checkpoint format
    version 1, word tokenizer, absolute positions, a config without the new fields) gives the
    logits it gave before the n-gram tokenizer and relative positions existed (values computed
    with that code; bit-identical on the machine that computed them)."""
    reference_checkpoint = VERSION_1
    meta = json.loads((reference_checkpoint / "checkpoint.json").read_text())
    assert meta["version"] == 1 and "positions" not in meta["model_config"]
    model, tok, _ = load_model(reference_checkpoint)
    assert type(tok) is Tokenizer and model.config.positions == "absolute" and not hasattr(model, "ngram_emb")
    texts = ["behave as yourself", "behave as agent 3", "pretend to be agent 2 pretending to be you", "mimic agent 1 please"]
    ids = encode_prompts(tok, texts, model.config.max_prompt_len)
    g = torch.Generator().manual_seed(0)
    s, n = len(texts), 6
    with torch.no_grad():
        logits = model(ids, torch.randn(s, n, model.config.d_evidence, generator=g),
                       torch.randint(0, 5, (s, n), generator=g).float(), torch.arange(s) % n,
                       torch.ones(s, n, dtype=torch.bool), torch.randn(s, 5, model.config.n_features, generator=g).round())
    before = [[5.74493, 2.24785, 4.61831, -0.69244, 2.25843], [6.00075, 0.87814, 6.73877, 6.33785, 6.42187],
              [3.00691, 5.15167, 6.05626, 7.31634, 6.11609], [-1.15718, 9.56549, -3.98349, 20.24386, -2.50303]]
    np.testing.assert_allclose(logits.numpy(), before, atol=2e-4, rtol=0)
