"""Every benchmark script runs end to end at a tiny size and prints sane figures.

The figures themselves (and the targets) are in docs/benchmarks.md; here only that each script
works and that what it prints is consistent: positive rates, the agent counts asked for, and
agent-steps = env-steps x agents.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str, timeout: float = 300) -> list[dict]:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                       text=True, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert rows, r.stdout[-2000:]
    return rows


def test_env_benchmark():
    rows = run_bench("env.py", "--steps", "40")
    assert [r["agents"] for r in rows] == [8, 32, 64]
    for r in rows:
        assert r["parallel_env_steps_per_s"] > 0 and r["core_env_steps_per_s"] > 0
        assert r["core_with_situations_env_steps_per_s"] > 0


def test_env_throughput_benchmark():
    rows = run_bench("env_throughput.py", "--seconds", "0.05")
    dict_api = [r for r in rows if r.get("what") == "dict API"]
    assert sorted(r["agents"] for r in dict_api) == [8, 32, 64]
    for r in rows:
        if "agent_steps_per_s" in r and "env_steps_per_s" in r:
            assert r["agent_steps_per_s"] > 0
            assert r["agent_steps_per_s"] == pytest.approx(r["env_steps_per_s"] * r["agents"], rel=0.01)


def test_generation_benchmark():
    rows = run_bench("generation.py", "--episodes", "8", "--workers", "0")
    assert all(r.get("samples_per_s", 1) > 0 for r in rows)


@pytest.mark.slow
def test_acting_benchmark(reference_checkpoint):
    rows = run_bench("acting.py", "--checkpoint", str(reference_checkpoint), "--steps", "3", "--threads", "1")
    assert [r["model_driven"] for r in rows] == [8, 32, 64]
    assert all(r["env_steps_per_s"] > 0 and r["scripted_env_steps_per_s"] > 0 for r in rows)


@pytest.mark.slow  # about 5 s: a fresh interpreter imports torch, generates 16 episodes, trains
def test_training_benchmark():
    rows = run_bench("training.py", "--size", "tiny", "--steps", "3", "--workers", "0", "--episodes", "16")
    assert rows[0]["size"] == "tiny" and rows[0]["samples_per_s"] > 0


@pytest.mark.slow
def test_speedrun_prompts_benchmark():
    """Each of the recipe's prompt options trains on the same batches; made-up words add distinct
    prompts to a batch, and the encoder's share of a step is a fraction. (At this size a batch asks
    too few made-up prompts for 8 draws a kind to cut them.)"""
    rows = run_bench("speedrun.py", "prompts", "--threads", "1", "--steps", "2", "--warmup", "0", "--episodes", "16",
                     "--episodes-per-batch", "8")
    settings = rows[1:]
    assert [r["setting"] for r in settings][0] == "word tokenizer" and len(settings) == 6
    assert settings[0]["ratio"] == 1.0 and all(r["samples_per_s"] > 0 for r in settings)
    assert settings[4]["distinct_prompts"] > settings[3]["distinct_prompts"]  # made-up words add prompts
    assert all(0 < r["encoder_share"] < 1 for r in settings)
    # FLOPs counted on one step of each: made-up prompts are more prompts to encode
    assert all(r["flops_per_sample"] > 0 and 0 < r["roofline_fraction"] < 1 for r in settings)
    assert settings[4]["flops_per_sample"] > settings[3]["flops_per_sample"]


@pytest.mark.slow  # four `mirrorhall train` runs of 20 small steps, each in a fresh interpreter
def test_speedrun_baseline_with_the_recipes_prompts():
    """``baseline --recipe-prompts`` trains both checkouts with the recipe's prompt options (here
    this checkout against itself): each rate is positive and the ratio is the rates'."""
    if not (ROOT / ".venv/bin/mirrorhall").exists():
        pytest.skip("baseline runs a checkout's own .venv/bin/mirrorhall; this checkout has none")
    rows = run_bench("speedrun.py", "baseline", "--checkout", str(ROOT), "--recipe-prompts", "--threads", "1",
                     "--steps", "20", "--repeats", "1", "--episodes", "16", "--episodes-per-batch", "4")
    runs = [r for r in rows if "checkout" in r]
    assert [r["checkout"] for r in runs] == ["before", "now"] and all(r["samples_per_s"] > 0 for r in runs)
    summary = rows[-1]
    assert summary["ratio now"] == pytest.approx(summary["now"] / summary["before"], abs=0.006)


@pytest.mark.slow
def test_speedrun_loop_benchmark():
    """Every form of the training step runs on the same batches; the shared-work forms count fewer
    FLOPs per sample than the general path, and every share of a step is a fraction summing to 1."""
    rows = run_bench("speedrun.py", "loop", "--threads", "1", "--steps", "2", "--warmup", "0", "--episodes", "16",
                     "--episodes-per-batch", "8")
    machine, forms = rows[0], rows[1:]
    assert machine["matmul_gflops_fp32"] > 0 and machine["matmul_gflops_bf16"] > 0
    assert len(forms) == 4 and all(r["samples_per_s"] > 0 for r in forms)
    assert forms[2]["flops_per_sample"] < forms[0]["flops_per_sample"]
    for r in forms:
        shares = [r[f"share_{k}"] for k in ("data", "forward", "backward", "optimiser")]
        assert all(0 <= s <= 1 for s in shares) and sum(shares) == pytest.approx(1, abs=0.01)
        assert 0 < r["roofline_fraction"] < 1


@pytest.mark.slow  # a fresh interpreter imports torch, builds arrays both ways and acts
def test_perspective_benchmark(tmp_path):
    from mirrorhall.imitation.generate import GenerateConfig, generate

    generate(GenerateConfig(population="lab-belief", episodes=4, episodes_per_shard=4, steps=10, view_radius=2,
                            seed=0), tmp_path / "d")
    for columns in ("perspective", "pickups"):
        rows = run_bench("perspective.py", "--data", str(tmp_path / "d"), "--episodes", "4", "--repeats", "1",
                         "--steps", "3", "--columns", columns)
        arrays, acting = rows
        assert arrays["view_radius"] == 2 and arrays["steps"] == 10 and arrays["columns"] == acting["columns"] == columns
        ms, ms_p = arrays["ms_per_episode"], arrays["ms_per_episode_with"]
        # the times are rounded to 0.01 ms and the ratio to 0.01: the ratio of the rounded times may differ by that much
        slack = ms_p / ms * (0.005 / ms + 0.005 / ms_p) + 0.005
        assert ms > 0 and arrays["ratio"] == pytest.approx(ms_p / ms, abs=slack + 1e-9)
        assert acting["env_steps_per_s"] > 0 and acting["env_steps_per_s_with"] > 0
