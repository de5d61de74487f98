"""Same seed, same bytes for training: two single-threaded local runs (fresh interpreters, through
the CLI) log identical losses (exact equality) and write byte-identical weights and optimizer
state (sha256 of every checkpoint's .safetensors files). A different seed gives other bytes, so
the comparison can fail. Episodes and datasets: tests/test_determinism.py, tests/test_dataset.py.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

MIRRORHALL = str(Path(sys.executable).parent / "mirrorhall")

pytestmark = pytest.mark.slow  # three training runs in fresh interpreters


@pytest.fixture(scope="module")
def data(train_dataset) -> str:
    """The shared 16-episode dataset of tests/conftest.py (read only: runs write elsewhere)."""
    return str(train_dataset)


def train(data: str, run: Path, seed: int) -> Path:
    r = subprocess.run([MIRRORHALL, "train", "--data", data, "--out", str(run), "--size", "tiny", "--threads", "1",
                        "--steps", "60", "--checkpoint-every", "30", "--eval-every", "30", "--seed", str(seed),
                        "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return run


def losses(run: Path) -> list[tuple[str, int, float]]:
    out = []
    for rec in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()):
        for key in ("loss", "kl", "grad_norm", "eval_ce", "eval_kl"):
            if key in rec:
                out.append((rec["phase"], rec["step"], key, rec[key]))
    return out


def digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run / "checkpoints").rglob("*.safetensors"))}


def test_same_seed_single_thread_training_gives_identical_losses_and_weight_bytes(tmp_path, data):
    a = train(data, tmp_path / "a", seed=0)
    b = train(data, tmp_path / "b", seed=0)
    la, lb = losses(a), losses(b)
    assert len(la) > 10
    assert la == lb  # exact float equality, every logged step, train and eval
    da, db = digests(a), digests(b)
    assert set(da) == {f"checkpoints/step-{s:08d}/{f}" for s in (30, 60)
                       for f in ("model.safetensors", "optimizer.safetensors")}
    assert da == db
    c = train(data, tmp_path / "c", seed=1)
    assert losses(c) != la
    assert set(digests(c).values()).isdisjoint(da.values())
