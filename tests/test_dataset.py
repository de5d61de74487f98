"""Hindsight-labelled datasets: labels are exact, storage is atomic, resumable and deterministic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mirrorhall.agents.bayes import HypothesisSet
from mirrorhall.agents.cast import Cast
from mirrorhall.agents.personas import Trait
from mirrorhall.envs.core import WorldCore
from mirrorhall.imitation.dataset import Dataset, DatasetError, GenerateConfig, generate, shard_name
from mirrorhall.imitation.labels import second_order_probs
from mirrorhall.imitation.prompts import Kind, kind_from_name, parse_prompt

MIRRORHALL = str(Path(sys.executable).parent / "mirrorhall")
SMALL = dict(population="crowd", episodes=12, episodes_per_shard=4, steps=30, agents=6, seed=11)


def manifest_sums(root: Path) -> dict:
    return {k: v["sha256"] for k, v in json.loads((root / "manifest.json").read_text())["shards"].items()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Dataset:
    root = tmp_path_factory.mktemp("ds") / "small"
    generate(GenerateConfig(**SMALL), root)
    return Dataset(root)


def test_every_label_is_a_distribution(small):
    kinds = set()
    for ep in small.episodes():
        assert np.all(ep.label >= 0)
        np.testing.assert_allclose(ep.label.sum(1), 1.0, atol=1e-5)
        kinds |= set(ep.kind.tolist())
        assert not ep.prompt_held_out.any(), "held-out paraphrases must never be in training data"
    assert kinds == set(int(k) for k in Kind)


def replay(ep, world):
    """Situations of every step and a fresh cast of the episode's personas, from stored states."""
    core = WorldCore(world)
    sit = core.situations(ep.world_states(world))  # (T + 1, N)
    return sit, Cast([ep.personas], world)


def test_self_and_other_labels_match_the_oracle_replayed_from_stored_states(small):
    checked = {Kind.SELF: 0, Kind.OTHER: 0}
    world = small.world
    for ep in small.episodes():
        sit, cast = replay(ep, world)
        state = cast.initial_state()
        for s in range(len(ep.kind)):
            kind, i, k, t = ep.kind[s], ep.agent[s], ep.target[s], ep.t[s]
            persona = i if kind == Kind.SELF else k
            if kind not in checked or not isinstance(ep.personas[persona], Trait):
                continue  # trait personas have no state, so one replayed situation suffices
            q = cast.probs_as(np.array([[persona]]), sit.take(np.s_[t : t + 1]), state,
                              situation=np.array([[i]]))[0, 0]
            np.testing.assert_allclose(ep.label[s], q, atol=1e-6)
            checked[kind] += 1
    assert checked[Kind.SELF] > 100 and checked[Kind.OTHER] > 100


def test_other_k_in_ks_own_situation_equals_self_of_k(small):
    world = small.world
    ep = next(small.episodes())
    sit, cast = replay(ep, world)
    state = cast.initial_state()
    n = world.n_agents
    own = cast.probs(sit.take(np.s_[5:6]), state)  # (1, N, 5)
    counterfactual = cast.probs_as(np.arange(n)[None], sit.take(np.s_[5:6]), state,
                                   situation=np.arange(n)[None])
    np.testing.assert_array_equal(own, counterfactual)


def test_second_order_of_a_faithful_certain_imitator_is_self(small):
    world = small.world
    hyp = HypothesisSet.grid(world.n_colors, world.n_agents)
    ep = next(small.episodes())
    sit, cast = replay(ep, world)
    traits = [i for i, p in enumerate(ep.personas) if isinstance(p, Trait)]
    assert traits
    for i in traits:
        s = sit.take(np.s_[3:13, i])  # 10 steps of agent i
        belief = np.full((10, len(hyp)), -np.inf)
        belief[:, hyp.index(ep.personas[i])] = 0.0
        second = second_order_probs(np.ones(10), belief, hyp.probs(s), own=np.full((10, 5), 0.2))
        self_ = cast.probs(sit, cast.initial_state())[3:13, i]
        np.testing.assert_allclose(second, self_, atol=1e-12)
        # with fidelity 0 it is the imitator's own policy
        own = np.random.default_rng(i).dirichlet(np.ones(5), size=10)
        np.testing.assert_allclose(second_order_probs(np.zeros(10), belief, hyp.probs(s), own), own)


def collections_from_states(ep, world) -> np.ndarray:
    """(T + 1, N, C) gems collected, rebuilt from stored positions with the documented rule."""
    steps, n = ep.actions.shape
    out = np.zeros((steps + 1, n, world.n_colors), dtype=np.int64)
    color = np.repeat(np.arange(world.n_colors), world.gems_per_color)
    for t in range(steps):
        out[t + 1] = out[t]
        for g, (r, c) in enumerate(ep.gem_pos[t]):
            on = [i for i in range(n) if tuple(ep.agent_pos[t + 1, i]) == (r, c)]
            if on:
                winner = min(on, key=lambda i: (i - t) % n)
                out[t + 1, winner, color[g]] += 1
    return out


def test_return_prompts_state_what_actually_happened(small):
    world = small.world
    names = world.color_names
    n_checked = 0
    for ep in small.episodes():
        got = collections_from_states(ep, world)
        for s in np.flatnonzero(ep.kind == Kind.RETURN):
            p = parse_prompt(ep.prompt[s])
            n, color, horizon = p.outcome
            i, t = ep.agent[s], ep.t[s]
            gained = got[t + horizon, i] - got[t, i]
            assert n == (gained.sum() if color == "any" else gained[names.index(color)]), ep.prompt[s]
            np.testing.assert_array_equal(ep.label[s], np.eye(5)[ep.actions[t, i]])
            n_checked += 1
    assert n_checked > 50


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path, small):
    again = tmp_path / "again"
    generate(GenerateConfig(**SMALL), again)
    assert manifest_sums(again) == manifest_sums(small.root)
    other = tmp_path / "other"
    generate(GenerateConfig(**{**SMALL, "seed": 12}), other)
    assert set(manifest_sums(other).values()).isdisjoint(manifest_sums(small.root).values())


def test_local_processes_write_the_same_bytes(tmp_path, small):
    """--processes 2 records shards in order: the manifest and every shard match one process."""
    multi = tmp_path / "multi"
    generate(GenerateConfig(**SMALL), multi, processes=2)
    assert manifest_sums(multi) == manifest_sums(small.root)
    assert (multi / "manifest.json").read_bytes() == (small.root / "manifest.json").read_bytes()


def test_killed_generation_resumes_with_identical_checksums(tmp_path, small):
    root = tmp_path / "killed"
    args = [MIRRORHALL, "generate", "--population", "crowd", "--episodes", "240",
            "--episodes-per-shard", "4", "--steps", "30", "--agents", "6", "--seed", "11",
            "--out", str(root), "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        m = root / "manifest.json"
        if m.exists() and 3 <= len(json.loads(m.read_text())["shards"]) < 60:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = manifest_sums(root)
    assert 3 <= len(partial) < 60, "the run must be killed midway"
    for name in partial:  # nothing listed is half-written
        assert (root / name).stat().st_size == json.loads((root / "manifest.json").read_text())["shards"][name]["bytes"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = manifest_sums(root)
    assert len(resumed) == 60
    assert {k: resumed[k] for k in partial} == partial  # kept, not rewritten differently
    full = tmp_path / "full"
    generate(GenerateConfig(**{**SMALL, "episodes": 240}), full)
    assert resumed == manifest_sums(full)
    assert not list(root.glob(".*.tmp"))
    # the first shards equal those of the 12-episode dataset of the same seed
    assert resumed[shard_name(0)] == manifest_sums(small.root)[shard_name(0)]


def test_different_dataset_in_folder_is_refused(small):
    with pytest.raises(DatasetError, match="holds a different dataset.*seed"):
        generate(GenerateConfig(**{**SMALL, "seed": 99}), small.root)


def test_truncated_and_bitflipped_shards_are_named(tmp_path):
    root = tmp_path / "d"
    generate(GenerateConfig(**{**SMALL, "episodes": 8}), root)
    path = root / shard_name(1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"shard-00001\.parquet is truncated or corrupted.*delete it"):
        Dataset(root)
    with pytest.raises(DatasetError, match=r"shard-00001\.parquet"):
        generate(GenerateConfig(**{**SMALL, "episodes": 8}), root)
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(flipped))
    with pytest.raises(DatasetError, match=r"shard-00001\.parquet is truncated or corrupted"):
        Dataset(root)
    assert (root / shard_name(0)).exists(), "nothing already written is lost"
    path.unlink()  # the advice in the message works
    with pytest.raises(DatasetError, match="missing"):
        Dataset(root)
    generate(GenerateConfig(**{**SMALL, "episodes": 8}), root)
    assert len(list(Dataset(root).episodes())) == 8


def test_unknown_schema_version_and_foreign_folders(tmp_path):
    root = tmp_path / "d"
    generate(GenerateConfig(**{**SMALL, "episodes": 4}), root)
    m = json.loads((root / "manifest.json").read_text())
    m["schema_version"] = 99
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match="schema version 99"):
        Dataset(root)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty and holds no mirrorhall dataset"):
        generate(GenerateConfig(**SMALL), foreign)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(DatasetError, match="no manifest.json"):
        Dataset(foreign)


def test_bad_generator_config_and_prompt_kinds():
    with pytest.raises(ValueError, match="unknown population 'nope'"):
        GenerateConfig(population="nope")
    with pytest.raises(ValueError, match="kind_weights"):
        GenerateConfig(kind_weights=(1, 1))
    with pytest.raises(ValueError, match="episodes must be a positive integer"):
        GenerateConfig(episodes=0)
    with pytest.raises(ValueError, match="unknown prompt kind 'THIRD'.*SELF"):
        kind_from_name("THIRD")


def test_cli_generate_errors_are_one_line(tmp_path):
    r = subprocess.run([MIRRORHALL, "generate", "--population", "nope", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["mirrorhall: error: unknown population 'nope'; allowed: traits, crowd, followers, species, lab"]


def test_pandas_reads_shards(small):
    import pandas as pd

    df = pd.read_parquet(small.root / shard_name(0))
    assert len(df) == SMALL["episodes_per_shard"]
    assert len(df.iloc[0]["s_label"]) == 5 * len(df.iloc[0]["s_kind"])


@pytest.mark.ray
def test_ray_generation_matches_local_and_ray_data_reads_it(tmp_path, small):
    from mirrorhall.raykit import ray_session

    with ray_session(num_cpus=2) as ray:
        root = tmp_path / "ray"
        generate(GenerateConfig(**SMALL), root, workers=2)
        assert manifest_sums(root) == manifest_sums(small.root)
        ds = ray.data.read_parquet(str(root), file_extensions=["parquet"])
        assert ds.count() == SMALL["episodes"]
        total = ds.map(lambda row: {"n": len(row["s_kind"])}).sum("n")
        assert total == small.n_samples
