"""Hindsight-labelled datasets: labels are exact, storage is atomic, resumable and deterministic."""

from __future__ import annotations

import json
import os
import shutil
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
from mirrorhall.envs.perception import situations
from mirrorhall.errors import DatasetError
from mirrorhall.imitation.generate import GenerateConfig, generate
from mirrorhall.imitation.labels import second_order_probs
from mirrorhall.imitation.prompts import Kind, kind_from_name, parse_prompt
from mirrorhall.imitation.shards import Dataset, shard_name

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
    sit = situations(core, ep.world_states(world))  # (T + 1, N)
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


@pytest.mark.slow
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
    assert r.stderr.strip().splitlines() == ["mirrorhall: error: unknown population 'nope'; allowed: traits, crowd, followers, species, lab, lab-families, "
                                              "lab-minus-patrol, lab-minus-collector, lab-minus-territorial, "
                                              "lab-minus-contrarian, lab-minus-explorer, lab-belief, or lab+<family>+... "
                                              "(families: patrol, collector, territorial, contrarian, explorer)"]


def test_pandas_reads_arrays_of_numbers_not_bytes(small):
    import pandas as pd

    df = pd.read_parquet(small.root / shard_name(0))
    assert len(df) == SMALL["episodes_per_shard"]
    row, ep = df.iloc[1], list(small.episodes())[1]
    assert len(row["s_label"]) == 5 * len(row["s_kind"])
    t, n = SMALL["steps"], SMALL["agents"]
    assert (row["steps"], row["agents"], row["gems"]) == (t, n, small.world.n_gems)
    for col, shape in (("agent_pos", (t + 1, n, 2)), ("gem_pos", (t + 1, small.world.n_gems, 2)),
                       ("actions", (t, n)), ("valued", (n,))):
        assert isinstance(row[col], np.ndarray) and row[col].dtype == np.int8, col
        np.testing.assert_array_equal(row[col].reshape(shape), getattr(ep, col))
    assert row["s_label"].dtype == np.float32
    np.testing.assert_array_equal(row["s_label"].reshape(-1, 5), ep.label)


def docs_python_block(heading: str) -> str:
    """The first python code block after ``heading`` in docs/dataset.md."""
    text = (Path(__file__).parents[1] / "docs" / "dataset.md").read_text()
    section = text[text.index(heading):]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_pandas_example_of_the_docs_runs(small):
    code = docs_python_block("## Reading")
    assert len([line for line in code.splitlines() if line.strip()]) <= 5
    scope: dict = {}
    exec(code.replace("DIR", str(small.root)), scope)
    ep = next(small.episodes())
    np.testing.assert_array_equal(scope["positions"], ep.agent_pos)
    assert scope["positions"].shape == (SMALL["steps"] + 1, SMALL["agents"], 2)
    np.testing.assert_array_equal(scope["labels"], ep.label)


V1 = Path(__file__).parent / "data" / "dataset-v1"
V1_CONFIG = dict(population="lab", episodes=3, agents=4, steps=12, episodes_per_shard=2, seed=7)
"""tests/data/dataset-v1: written by mirrorhall with schema version 1 (binary blobs) from this config."""


def test_version_1_datasets_decode_to_the_arrays_version_2_stores(tmp_path):
    old = tmp_path / "v1"
    shutil.copytree(V1, old)
    assert json.loads((old / "manifest.json").read_text())["schema_version"] == 1
    new = tmp_path / "v2"
    generate(GenerateConfig(**V1_CONFIG), new)
    v1, v2 = Dataset(old), Dataset(new)
    assert (v1.schema_version, v2.schema_version) == (1, 2)
    assert v1.config == v2.config
    pairs = list(zip(v1.episodes(), v2.episodes(), strict=True))
    assert len(pairs) == 3
    for a, b in pairs:
        # the scenes (personas, world and policy streams) are as version 1 wrote them; the prompt
        # stream draws the prompt grammar's forms and surfaces since, so the samples' prompts,
        # kinds, targets and labels are new draws of the same types and shapes
        assert a.episode == b.episode and a.personas == b.personas and len(a.prompt) == len(b.prompt)
        for f in ("agent_pos", "gem_pos", "actions", "valued", "agent", "t", "kind", "target", "template",
                  "prompt_held_out", "label"):
            x, y = getattr(a, f), getattr(b, f)
            assert x.dtype == y.dtype and x.shape == y.shape, f
            if f in ("agent_pos", "gem_pos", "actions", "valued", "agent", "t"):
                np.testing.assert_array_equal(x, y, err_msg=f)
    # a version-1 folder is read, never written into
    with pytest.raises(DatasetError, match="schema version 1, this mirrorhall writes version 2; choose another --out"):
        generate(GenerateConfig(**V1_CONFIG), old)


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


def test_labelling_runs_the_scene_loop_through_its_hook():
    """label_shard is run_scene plus an on_act hook: the hook sees each step's probabilities,
    actions and pre-step world, changes nothing, and the labelled trajectories are the scene's."""
    from mirrorhall.agents.populations import get_population
    from mirrorhall.agents.scene import run_scene
    from mirrorhall.imitation.labels import label_shard, shard_seeds

    cfg = GenerateConfig(**{**SMALL, "population": "lab", "episodes": 3, "steps": 12})
    world, pop = cfg.world(), get_population(cfg.population)
    rng_personas, rng_world, rng_policy, _ = shard_seeds(cfg.seed, 0)
    rows = [pop.sample_scene(cfg.agents, cfg.colors, rng_personas) for _ in range(3)]
    hyp = pop.hypotheses(cfg.colors, cfg.agents)
    seen = []

    def hook(step):
        seen.append((step.t, step.state.agent_pos.copy(), step.probs.copy(), step.actions.copy()))

    ep = run_scene(world, rows, cfg.steps, cfg.seed, hypotheses=hyp, on_act=hook,
                   generators=(rng_world, rng_policy))
    _, rng_world, rng_policy, _ = shard_seeds(cfg.seed, 0)
    plain = run_scene(world, rows, cfg.steps, cfg.seed, hypotheses=hyp, generators=(rng_world, rng_policy))
    assert ep.digest() == plain.digest()
    assert [s[0] for s in seen] == list(range(cfg.steps))
    for t, pos, probs, actions in seen:
        np.testing.assert_array_equal(pos, ep.agent_pos[t])
        np.testing.assert_array_equal(probs, ep.probs[t])
        np.testing.assert_array_equal(actions, ep.actions[t])
    lab = label_shard(cfg, 0, 3)
    np.testing.assert_array_equal(lab.agent_pos, ep.agent_pos)
    np.testing.assert_array_equal(lab.gem_pos, ep.gem_pos)
    np.testing.assert_array_equal(lab.actions, ep.actions)
    self_ = lab.kind == Kind.SELF
    np.testing.assert_allclose(lab.label[self_], ep.probs[lab.t[self_], lab.world[self_], lab.agent[self_]],
                               rtol=1e-6)


@pytest.mark.parametrize("column, value, message", [
    ("agents", 5, "5 agents and 8 gems, the manifest's world has 6 and 8"),
    ("steps", 31, "steps must be an integer in 0..30, got 31"),
    ("steps", 29, "cannot reshape"),
])
def test_rows_whose_sizes_disagree_are_named(column, value, message, tmp_path):
    """A shard whose checksum matches but whose sizes do not fit its arrays is refused by name."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "d"
    generate(GenerateConfig(**{**SMALL, "episodes": 4}), root)
    path = root / shard_name(0)
    table = pq.read_table(path)
    sizes = table.column(column).to_pylist()
    table = table.set_column(table.schema.get_field_index(column), column,
                             pa.array([value] + sizes[1:], type=pa.int16()))
    pq.write_table(table, path)
    raw = path.read_bytes()
    m = json.loads((root / "manifest.json").read_text())
    m["shards"][shard_name(0)].update(sha256=hashlib.sha256(raw).hexdigest(), bytes=len(raw))
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match=rf"shard-00000\.parquet: episode 0 cannot be decoded .*{message}"):
        list(Dataset(root).episodes())
