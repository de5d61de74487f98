"""Named random streams: each equals, bit for bit, the expression the project used before streams
were named; names are unique; a stream depends on (seed, name, index) and not on what was drawn
before it; and no two streams coincide beyond the overlaps the module declares."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest

from mirrorhall import streams

SEEDS = (0, 1, 5, 123_456_789)


def old_probe_seed(name: str, seed: int) -> np.random.SeedSequence:
    """The probe root before streams were named (analysis/common.py ``probe_seed``)."""
    tag = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    return np.random.SeedSequence([7_000_003, tag, seed])


def old_int_seed(ss: np.random.SeedSequence) -> int:
    return int(ss.generate_state(1)[0])


def same(a, b) -> None:
    """Two generators (or sequences) give the same numbers: equal states and equal draws."""
    if isinstance(a, np.random.SeedSequence):
        np.testing.assert_array_equal(a.generate_state(8), b.generate_state(8))
        a, b = np.random.default_rng(a), np.random.default_rng(b)
    assert a.bit_generator.state == b.bit_generator.state
    np.testing.assert_array_equal(a.integers(0, 2**62, 16), b.integers(0, 2**62, 16))


@pytest.mark.parametrize("seed", SEEDS)
def test_scene_streams_are_the_old_spawned_children(seed):
    world, policy, personas = np.random.SeedSequence(seed).spawn(3)  # run_scene spawned 2, the CLI 3
    same(streams.sequence(streams.SCENE_WORLD, seed), world)
    same(streams.sequence(streams.SCENE_POLICY, seed), policy)
    same(streams.sequence(streams.SCENE_PERSONAS, seed), personas)
    same(streams.rng(streams.SCENE_PERSONAS, seed),
         np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2]))


@pytest.mark.parametrize("seed", SEEDS)
def test_shard_streams_are_the_old_spawned_children(seed):
    named = (streams.SHARD_PERSONAS, streams.SHARD_WORLD, streams.SHARD_POLICY, streams.SHARD_PROMPTS)
    for shard in (0, 1, 17):
        old = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, shard]).spawn(4)]
        for stream, want in zip(named, old, strict=True):
            same(streams.rng(stream, seed, shard), want)


@pytest.mark.parametrize("seed", SEEDS)
def test_training_streams_are_the_old_tags(seed):
    for rank in (0, 1, 3):
        assert streams.worker_seed(seed, rank) == seed + 7919 * rank
    for i in (0, 1, 7, 1000):
        same(streams.rng(streams.BATCH_ORDER, seed, i), np.random.default_rng([seed, i]))
        same(streams.rng(streams.BATCH_SAMPLES, seed, i), np.random.default_rng([seed, 1 << 20, i]))
    same(streams.rng(streams.EVAL_SAMPLES, seed), np.random.default_rng([seed, 7]))
    perm = streams.rng(streams.BATCH_ORDER, streams.worker_seed(seed, 2), 3).permutation(50)
    np.testing.assert_array_equal(perm, np.random.default_rng([seed + 7919 * 2, 3]).permutation(50))


@pytest.mark.parametrize("seed", SEEDS)
def test_plain_and_tagged_streams_are_the_old_expressions(seed):
    for stream in (streams.BOOTSTRAP, streams.RANDOM_AGENT, streams.BENCHMARK):
        same(streams.rng(stream, seed), np.random.default_rng(seed))
    same(streams.rng(streams.SOAK_CORE_PERSONAS, seed), np.random.default_rng([seed, 1]))
    same(streams.rng(streams.SOAK_MODEL_PERSONAS, seed), np.random.default_rng([seed, 2]))
    for worker, vector in ((0, 1), (1, 0), (2, 3)):
        same(streams.rng(streams.ENV_RUNNER, seed, worker, vector), np.random.default_rng([seed, worker, vector]))


@pytest.mark.parametrize("probe", streams.PROBES)
@pytest.mark.parametrize("seed", SEEDS)
def test_probe_streams_are_the_old_root_and_its_children_in_call_order(probe, seed):
    root = old_probe_seed(probe, seed)
    same(streams.rng(streams.PROBE_DRAWS[probe], seed), np.random.default_rng(root))
    # the probes drew scene seeds with ``ss.spawn(1)[0]`` once per scene: scene i was child i
    for i in range(6):
        assert streams.int_seed(streams.PROBE_SCENES[probe], seed, i) == old_int_seed(root.spawn(1)[0])


@pytest.mark.parametrize("seed", SEEDS)
def test_compare_direct_learners_and_scene_are_the_old_children(seed):
    personas = 4
    root = old_probe_seed("compare_direct", seed)
    np.random.default_rng(root)  # the probe's draws come first; they spawn nothing
    ppo = [old_int_seed(s) % (2**31 - 1) for s in root.spawn(personas + 1)[1:]]
    scene = old_int_seed(root.spawn(1)[0])  # the child after the learners'
    assert [streams.int_seed(streams.COMPARE_DIRECT_LEARNER, seed, p) % (2**31 - 1)
            for p in range(personas)] == ppo
    assert streams.int_seed(streams.PROBE_SCENES["compare_direct"], seed, personas + 1) == scene


@pytest.mark.parametrize("seed", SEEDS)
def test_second_order_scene_then_essay_children(seed):
    """second_order drew its scene first, then one scene per theta in its essay."""
    root = old_probe_seed("second_order", seed)
    old = [old_int_seed(root.spawn(1)[0]) for _ in range(4)]
    assert [streams.int_seed(streams.PROBE_SCENES["second_order"], seed, i) for i in range(4)] == old


def test_names_are_unique_and_every_stream_is_registered():
    names = [s.name for s in streams.STREAMS]
    assert len(names) == len(set(names))
    assert len(streams.STREAMS) == len(set(streams.STREAMS))
    declared = {v for k, v in vars(streams).items() if isinstance(v, streams.Stream)}
    declared |= {s for d in (streams.PROBE_DRAWS, streams.PROBE_SCENES) for s in d.values()}
    assert declared == set(streams.STREAMS)
    for pair in streams.KNOWN_OVERLAPS:
        assert len(pair) == 2 and pair <= set(names)


def test_a_stream_does_not_depend_on_what_was_drawn_before():
    fresh = streams.rng(streams.PROBE_SCENES["imitate"], 3, 2).integers(0, 2**62, 8)
    fresh_seed = streams.int_seed(streams.PROBE_SCENES["imitate"], 3, 2)
    # draw and derive many other streams, and the same stream, in between
    for stream in streams.STREAMS:
        g = streams.rng(stream, 3, *range(stream.indices))
        g.integers(0, 10, 100)
        streams.sequence(stream, 3, *range(stream.indices)).spawn(5)
    streams.rng(streams.PROBE_SCENES["imitate"], 3, 2).integers(0, 10, 1000)
    for _ in range(3):
        streams.int_seed(streams.PROBE_SCENES["imitate"], 3, 0)
    again = streams.rng(streams.PROBE_SCENES["imitate"], 3, 2).integers(0, 2**62, 8)
    np.testing.assert_array_equal(fresh, again)
    assert streams.int_seed(streams.PROBE_SCENES["imitate"], 3, 2) == fresh_seed
    # and the order in which scene seeds are asked for does not matter
    forward = [streams.int_seed(streams.PROBE_SCENES["outcome"], 9, i) for i in range(5)]
    backward = [streams.int_seed(streams.PROBE_SCENES["outcome"], 9, i) for i in reversed(range(5))]
    assert forward == backward[::-1]


def test_the_wrong_number_of_indices_is_refused():
    with pytest.raises(TypeError, match="shard/world"):
        streams.sequence(streams.SHARD_WORLD, 1)
    with pytest.raises(TypeError, match="scene/world"):
        streams.sequence(streams.SCENE_WORLD, 1, 0)


def test_no_streams_coincide_beyond_the_declared_overlaps():
    """Every (seed, indices) of every stream over a small domain (seeds 0..3 and the probe base,
    indices 0..8 and 2**20); pairs of streams with one equal state must be declared overlaps."""
    owners: dict[bytes, set[str]] = {}
    values = (*range(9), 1 << 20)
    for stream in streams.STREAMS:
        for seed in (0, 1, 2, 3, streams.PROBE_SEED_BASE):
            for index in itertools.product(values, repeat=stream.indices):
                state = streams.sequence(stream, seed, *index).generate_state(4).tobytes()
                owners.setdefault(state, set()).add(stream.name)
    found = {frozenset(p) for names in owners.values() for p in itertools.combinations(sorted(names), 2)}
    assert found == streams.KNOWN_OVERLAPS
