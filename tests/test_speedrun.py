"""The fast training path computes what the general path computes, and the recipe runs end to end.

Training shares work between samples (evidence pooled over (episode, time, agent) under full view,
each character, key and value computed once per (episode, time), each distinct prompt encoded
once); these tests hold it to the general per-sample path of probes and acting, on real episodes
and the reference weights.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from mirrorhall.imitation.batches import PromptTable, episode_arrays, make_batch
from mirrorhall.imitation.checkpoint import load_model
from mirrorhall.imitation.generate import GenerateConfig, generate
from mirrorhall.imitation.model import MultiPolicyModel
from mirrorhall.imitation.model_io import batch_inputs, batch_logits, encode_prompts
from mirrorhall.imitation.shards import Dataset
from mirrorhall.imitation.train import TrainConfig, Trainer

from .conftest import REFERENCE, mirrorhall


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    """Three real `lab` episodes with the full (Ni, Nj) table, under full and partial view."""
    out = {}
    for radius in (None, 2):
        root = tmp_path_factory.mktemp(f"speed_r{radius}") / "data"
        generate(GenerateConfig(population="lab", episodes=3, episodes_per_shard=3, steps=16, seed=3,
                                view_radius=radius), root)
        data = Dataset(root)
        out[radius] = (data, [episode_arrays(ep, data.world, pairs=True) for ep in data.episodes()])
        out[radius, "place"] = (data, [episode_arrays(ep, data.world, pairs=True, place=True) for ep in data.episodes()])
    return out


@pytest.fixture(scope="module", params=["reference", "recency+place"])
def model(request):
    """The reference, and a model with recency-weighted evidence and place columns holding the
    reference's weights wherever the shapes agree (so its logits are as spread as a trained model's)."""
    net, tok = load_model(REFERENCE)[:2]
    if request.param != "reference":
        torch.manual_seed(0)
        recent = MultiPolicyModel(replace(net.config, recency=(2.0, 8.0), place=(11, 11)))
        own = recent.state_dict()
        recent.load_state_dict({k: v if v.shape == own[k].shape else own[k] for k, v in net.state_dict().items()})
        net = recent
    return net, tok


@pytest.mark.parametrize("radius", [None, 2])
def test_the_training_path_equals_the_general_per_sample_path(episodes, model, radius):
    """batch_logits == model(**batch_inputs) on every sample (float32 rounding), and so are the
    gradients; with and without recency-weighted evidence."""
    net, tok = model
    data, eps = episodes[(radius, "place") if net.config.place else radius]
    picks = [np.random.default_rng(e).choice(len(x.kind), 50, replace=False) for e, x in enumerate(eps)]
    batch = make_batch(eps, picks, PromptTable(tok, net.config.max_prompt_len), full_view=radius is None)
    with torch.no_grad():
        general = net(**batch_inputs(net, batch))
        fast = batch_logits(net, batch)
    assert general.shape == (150, 5) and general.std() > 0.1
    # float32 rounding of sums whose terms reach about 50 (the largest logits): the two paths add
    # them in different orders, which moves even a small logit by up to ~2e-5 on AVX-512 kernels
    scale = float(general.abs().max())
    torch.testing.assert_close(fast, general, atol=2e-6 * scale, rtol=1e-6)
    # the gradients agree too (the training path is what the optimiser sees)
    grads = []
    for fn in (lambda: net(**batch_inputs(net, batch)), lambda: batch_logits(net, batch)):
        net.zero_grad()
        (fn().log_softmax(-1) * batch.label).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    net.zero_grad()
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-4)


def test_own_rows_are_all_full_view_training_keeps(episodes):
    """Under full view an episode keeps only each agent's own rows (N times less memory), and they
    are the diagonal of the full table."""
    data, eps = episodes[None]
    light = episode_arrays(next(data.episodes()), data.world)
    assert light.feats is None and light.visible is None
    n = data.world.n_agents
    np.testing.assert_array_equal(light.own, eps[0].feats[:, np.arange(n), np.arange(n)])
    assert light.own.nbytes * n == eps[0].feats.nbytes


def test_the_prompt_table_encodes_each_text_once_and_keeps_ids_stable(episodes, model):
    net, tok = model
    _, eps = episodes[None]
    table = PromptTable(tok, 24)
    ids = [table.ids(ep) for ep in eps]
    texts = sorted({t for ep in eps for t in ep.prompts})
    assert len(table.index) == len(texts) == table.tokens.shape[0]
    for ep, got in zip(eps, ids, strict=True):
        want = encode_prompts(tok, [ep.prompts[i] for i in ep.prompt_index], 24)
        rows = table.tokens[torch.from_numpy(got)]
        assert torch.equal(rows if table.words is None else table.words[rows], want)
        np.testing.assert_array_equal(table.ids(ep), got)  # asked again: the same ids


def test_bf16_training_learns_and_is_deterministic(tmp_path, episodes):
    """--precision bf16: the loss falls by a stated margin in 40 steps, and two runs of one seed agree
    bit for bit. Threshold: final training loss at least 0.1 nats below the first step's."""
    data, _ = episodes[None]
    eps = [episode_arrays(ep, data.world) for ep in data.episodes()]
    losses = []
    for _ in range(2):
        cfg = TrainConfig(data=str(data.root), out=str(tmp_path), size="tiny", steps=40, episodes_per_batch=3,
                          samples_per_episode=128, lr=5e-3, warmup=2, precision="bf16", eval_fraction=0.0)
        trainer = Trainer(cfg, eps, load_model(REFERENCE)[1], data.world.n_colors, full_view=True)
        losses.append([trainer.train_step()["loss"] for _ in range(40)])
    assert losses[0] == losses[1]
    assert losses[0][-1] < losses[0][0] - 0.1, losses[0][::10]
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, auto, got 'fp16'"):
        TrainConfig(data="d", out="o", precision="fp16")


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_bf16_units(tmp_path, episodes):
    """--precision auto trains in bf16 only where oneDNN reports native bf16 (AVX512-BF16 or AMX);
    on an AVX2-only CPU emulated bf16 is several times slower than fp32, so auto is fp32 there. The
    run is the same as the resolved precision's, step for step."""
    from mirrorhall.imitation.train import native_bf16, resolve_precision

    cpu = torch.device("cpu")
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and "AVX512" in torch.backends.cpu.get_cpu_capability()
    assert native_bf16(cpu) == native
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    data, _ = episodes[None]
    eps = [episode_arrays(ep, data.world) for ep in data.episodes()]
    losses = {}
    for precision in ("auto", resolve_precision("auto", cpu)):
        cfg = TrainConfig(data=str(data.root), out=str(tmp_path), size="tiny", steps=5, episodes_per_batch=3,
                          samples_per_episode=64, lr=5e-3, warmup=2, precision=precision, eval_fraction=0.0)
        trainer = Trainer(cfg, eps, load_model(REFERENCE)[1], data.world.n_colors, full_view=True)
        losses[precision] = [trainer.train_step()["loss"] for _ in range(5)]
    assert len(losses) == 2 and len(set(map(tuple, losses.values()))) == 1


@pytest.mark.slow
def test_the_tiny_recipe_runs_from_nothing_to_a_probed_checkpoint(tmp_path, capsys):
    """`mirrorhall recipe tiny --minutes 5`: a dataset, a run, an exported checkpoint and the imitate
    probe's JSON, with every stage timed and the budget's plan recorded; the headline figure printed
    is the one in the probe's JSON."""
    out = tmp_path / "recipe"
    mirrorhall("recipe", "tiny", "--out", str(out), "--threads", "1", "--minutes", "5")
    printed = capsys.readouterr().out
    result = json.loads((out / "recipe.json").read_text())
    assert set(result["seconds"]) == {"generate", "train", "export", "probe", "total"}
    assert all(v > 0 for v in result["seconds"].values())
    assert (out / "checkpoint/checkpoint.json").exists() and (out / "checkpoint/model.safetensors").exists()
    probe = json.loads((out / "probe/imitate.json").read_text())
    k10 = next(c for c in probe["conditions"] if c["K"] == 10)
    assert result["fraction_at_K10"] == k10["fraction"]["mean"]
    assert f"{result['fraction_at_K10']:.3f}" in printed and "generate:" in printed
    assert result["train_metrics"]["step"] == result["train"]["steps"]
    # five minutes hold the recipe's 30 steps many times over: the budget plans all of them
    assert result["minutes"] == 5 and result["budget"]["steps"] == result["budget"]["at_most"] == 30
    assert "budget of 5 minutes: 30 steps (at most 30" in printed
    assert result["precision_used"] == "fp32" and "training precision: fp32" in printed
    net, _, meta = load_model(out / "checkpoint")
    assert meta["dataset"]["population"] == "lab" and meta["run_config"]["size"] == "tiny"


def test_the_recipe_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    from mirrorhall.cli import main

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    for argv, message in ((["recipe", "nope", "--out", str(tmp_path / "a")], "unknown recipe"),
                          (["recipe", "tiny", "--out", str(tmp_path / "full")], "not empty"),
                          (["recipe", "tiny", "--out", str(tmp_path / "b"), "--device", "tpu"], "--device"),
                          (["recipe", "tiny", "--out", str(tmp_path / "c"), "--minutes", "-3"], "--minutes must be")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "Traceback" not in err
    assert (tmp_path / "full" / "x").read_text() == "mine" and not (tmp_path / "a").exists()


def test_every_recipe_is_valid_and_fast_is_the_reference_fitted_to_its_budget(tmp_path):
    """Each recipe's fields make a valid dataset and training config; `fast` is the reference recipe
    with a 20-minute budget (as many of its steps as fit), the learning rate falling linearly to zero,
    8 made-up prompts a kind per batch and the weights' average, nothing else changed (its data, model, prompts and probe are the reference's)."""
    from mirrorhall.recipes import RECIPES

    for recipe in RECIPES.values():
        GenerateConfig(**recipe.generate)
        TrainConfig(data=str(tmp_path), out=str(tmp_path / "run"), **recipe.train)
    ref, fast = RECIPES["reference"], RECIPES["fast"]
    assert fast.generate == ref.generate and fast.target == ref.target == 0.89
    assert (fast.probe_scale, fast.probe_seed) == (ref.probe_scale, ref.probe_seed)
    changed = {k for k in fast.train.keys() | ref.train.keys() if fast.train.get(k) != ref.train.get(k)}
    assert changed == {"unreadable_draws", "ema", "schedule"} and 0 < fast.train["ema"] < 1
    assert (fast.minutes, ref.minutes) == (20, None)
