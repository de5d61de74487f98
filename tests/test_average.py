"""Weight averaging (``train --ema``): what the average is, what checkpoints hold, resume and export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mirrorhall.cli import main
from mirrorhall.imitation.average import WeightAverage
from mirrorhall.imitation.checkpoint import TRAINING_WEIGHTS, WEIGHTS, export_checkpoint, load_model
from mirrorhall.imitation.generate import GenerateConfig, generate
from mirrorhall.imitation.shards import Dataset
from mirrorhall.imitation.tokenizer import make_tokenizer
from mirrorhall.imitation.train import TrainConfig, Trainer, load_episodes, train


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("average") / "data"
    generate(GenerateConfig(episodes=16, episodes_per_shard=8, steps=20, seed=4), root)
    return root


def metrics(run: Path, phase: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["phase"] == phase]


def test_the_average_is_the_bias_corrected_moving_average_of_the_trained_weights(data):
    """After each of 12 steps the average equals a * average + (1 - a) * weights, computed here by
    hand from the weights after every step, with a = min(decay, (1 + t) / (10 + t)) (1e-6)."""
    torch.manual_seed(0)
    dataset = Dataset(data)
    cfg = TrainConfig(data=str(data), out="unused", size="tiny", steps=12, ema=0.8, eval_fraction=0.0)
    trainer = Trainer(cfg, load_episodes(dataset), make_tokenizer(cfg.tokenizer), dataset.world.n_colors,
                      full_view=dataset.world.view_radius is None)
    by_hand = {n: p.detach().clone() for n, p in trainer.core.named_parameters()}
    for t in range(12):
        trainer.train_step()
        a = min(0.8, (1 + t) / (10 + t))
        for n, p in trainer.core.named_parameters():
            by_hand[n] = a * by_hand[n] + (1 - a) * p.detach()
    moved = 0
    for n, p in trainer.core.named_parameters():
        assert torch.allclose(trainer.average.shadow[n], by_hand[n], atol=1e-6), n
        moved += not torch.equal(trainer.average.shadow[n], p.detach())
    assert moved > 0, "the average must lag the trained weights"
    with trainer.average.applied(trainer.core):
        assert all(torch.equal(p, trainer.average.shadow[n]) for n, p in trainer.core.named_parameters())
    assert not all(torch.equal(p, trainer.average.shadow[n]) for n, p in trainer.core.named_parameters())
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
        WeightAverage(trainer.core, 1.0)


def test_averaging_leaves_training_alone_and_checkpoints_resume_and_export_the_average(tmp_path, data):
    """A run with --ema 0.9 trains exactly as one without (the same losses, and its raw_eval_*
    are the plain run's eval_*); its checkpoint's model is the average and the trained weights sit
    beside it; a run killed at step 10 and resumed to 20 ends with the same average and weights
    (1e-5); export keeps the average only."""
    torch.set_num_threads(1)
    cfg = dict(data=str(data), steps=20, size="tiny", eval_every=10, checkpoint_every=10, log_every=5)
    plain, straight, killed = tmp_path / "plain", tmp_path / "straight", tmp_path / "killed"
    train(TrainConfig(out=str(plain), **cfg), progress=False)
    train(TrainConfig(out=str(straight), ema=0.9, **cfg), progress=False)
    assert [m["loss"] for m in metrics(plain, "train")] == [m["loss"] for m in metrics(straight, "train")]
    for p, s in zip(metrics(plain, "eval"), metrics(straight, "eval"), strict=True):
        assert s["raw_eval_kl"] == pytest.approx(p["eval_kl"], abs=1e-6)
        assert s["raw_eval_kl_OTHER"] == pytest.approx(p["eval_kl_OTHER"], abs=1e-6)
        assert s["eval_kl"] != pytest.approx(p["eval_kl"], abs=1e-6), "the average's figures are its own"

    folder = straight / "checkpoints" / "step-00000020"
    averaged, trained = load_file(str(folder / WEIGHTS)), load_file(str(folder / TRAINING_WEIGHTS))
    plain_weights = load_file(str(plain / "checkpoints" / "step-00000020" / WEIGHTS))
    assert all(torch.equal(trained[k], plain_weights[k]) for k in plain_weights)
    assert any(not torch.equal(averaged[k], trained[k]) for k in trained)

    def stop(m):
        if m["step"] == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=str(killed), ema=0.9, **cfg), progress=False, on_log=stop)
    train(TrainConfig(out=str(killed), ema=0.9, **cfg), resume=True, progress=False)
    resumed = killed / "checkpoints" / "step-00000020"
    for name in (WEIGHTS, TRAINING_WEIGHTS):
        a, b = load_file(str(folder / name)), load_file(str(resumed / name))
        assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), name

    out = export_checkpoint(straight, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.json", WEIGHTS]
    model, _, _ = load_model(out)
    assert all(torch.equal(v, averaged[k]) for k, v in model.state_dict().items())


def test_a_bad_ema_is_one_line_on_the_command_line(tmp_path, data, capsys):
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--ema", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.splitlines() == [err] and "ema must be in [0, 1) (0: no average), got 1.0" in err
    assert not (tmp_path / "run").exists()


def test_damaged_trained_weights_are_refused_on_resume_and_spare_the_model(tmp_path, data, capsys):
    """A bit flipped in training-weights.safetensors: --resume refuses in one line naming the file
    (exit 2, the run untouched); the checkpoint's model (the average) still loads."""
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(run), "--size", "tiny", "--steps", "4",
            "--checkpoint-every", "4", "--eval-every", "4", "--ema", "0.9", "--no-progress"]
    assert main(argv) == 0
    folder = run / "checkpoints" / "step-00000004"
    damaged = bytearray((folder / TRAINING_WEIGHTS).read_bytes())
    damaged[len(damaged) // 2] ^= 0x04
    (folder / TRAINING_WEIGHTS).write_bytes(bytes(damaged))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    capsys.readouterr()
    assert main([*argv[:8], "8", *argv[9:], "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err]
    assert f"{folder / TRAINING_WEIGHTS} is truncated or corrupted (checksum mismatch)" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    load_model(run)
