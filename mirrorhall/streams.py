"""Every random stream of mirrorhall, by name, derived from ``(seed, name, index...)``.

A stream is a numpy ``SeedSequence`` that depends only on the seed, the stream's name and its
explicit indices (a shard, an epoch, a step, a scene number), never on how many streams were drawn
before it. Every generator in the project comes from here::

    rng = streams.rng(streams.SCENE_WORLD, seed)
    perm = streams.rng(streams.BATCH_ORDER, seed, epoch).permutation(n)
    scene_seed = streams.int_seed(streams.PROBE_SCENES["imitate"], seed, i)

Layout. Each stream fixes where its words go::

    entropy   = (*before, seed, *after, *index)   if index_in == "entropy"
    spawn_key = (*child, *(first + i for i in index))   if index_in == "spawn_key"

numpy's ``SeedSequence(entropy, spawn_key=(i,))`` is the i-th child of
``SeedSequence(entropy).spawn(...)``, so the streams that were once spawned in call order keep
their numbers with the child number written out. The layouts are the ones the project has always
used, so every number is what it was before streams were named.

Overlaps. ``SeedSequence`` pads short entropy with zeros, so ``[seed, 0]`` is ``seed``, and some
legacy layouts share words; ``KNOWN_OVERLAPS`` lists the pairs of streams that can coincide for
the same seed (tests/test_streams.py checks that no other pair does). They are kept because
changing them changes datasets, runs and probe results. A new stream should not add to them:
give it ``after=(tag(name),)``, a word no other stream uses.

This module imports nothing from mirrorhall, so every layer may use it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np


def tag(name: str) -> int:
    """A 32-bit word naming ``name``: the first four bytes of its sha256, little-endian."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


@dataclass(frozen=True)
class Stream:
    """Where one named stream puts the seed and its indices (see the module docstring)."""

    name: str
    """Unique, ``area/what``."""
    indices: int = 0
    """How many indices the stream takes after the seed."""
    index_in: Literal["entropy", "spawn_key"] = "entropy"
    """Whether the indices are appended to the entropy words or to the spawn key."""
    before: tuple[int, ...] = ()
    """Entropy words before the seed."""
    after: tuple[int, ...] = ()
    """Entropy words after the seed, before any indices."""
    child: tuple[int, ...] = ()
    """A fixed spawn key: the stream is this child of ``SeedSequence(entropy)``."""
    first: int = 0
    """With ``index_in="spawn_key"``: index i is child ``first + i``."""


def sequence(stream: Stream, seed: int, *index: int) -> np.random.SeedSequence:
    """The ``SeedSequence`` of ``stream`` for ``seed`` and its ``index`` values."""
    if len(index) != stream.indices:
        raise TypeError(f"stream {stream.name!r} takes {stream.indices} indices, got {len(index)}")
    idx = tuple(int(i) for i in index)
    words = (*stream.before, int(seed), *stream.after, *(idx if stream.index_in == "entropy" else ()))
    key = (*stream.child, *((stream.first + i for i in idx) if stream.index_in == "spawn_key" else ()))
    entropy = words[0] if len(words) == 1 else list(words)  # a lone seed stays an int, as numpy stores it
    return np.random.SeedSequence(entropy, spawn_key=key)


def rng(stream: Stream, seed: int, *index: int) -> np.random.Generator:
    """A fresh generator on ``stream`` (``np.random.default_rng`` of its sequence)."""
    return np.random.default_rng(sequence(stream, seed, *index))


def int_seed(stream: Stream, seed: int, *index: int) -> int:
    """The first 32-bit word of ``stream``'s state: a seed for an API that takes an int."""
    return int(sequence(stream, seed, *index).generate_state(1)[0])


# --- scenes: ``run_scene(..., seed)`` and the personas a command draws for it -------------------

SCENE_WORLD = Stream("scene/world", child=(0,))
"""The world's draws (spawns, gem respawns) of a scene run from ``seed``."""
SCENE_POLICY = Stream("scene/policy", child=(1,))
"""The sampled actions of a scene run from ``seed``."""
SCENE_PERSONAS = Stream("scene/personas", child=(2,))
"""The personas ``mirrorhall run`` and ``act`` draw from a population for a scene of ``seed``."""

# --- dataset generation: one set per shard, index = shard -----------------------------------------

SHARD_PERSONAS = Stream("shard/personas", indices=1, child=(0,))
"""The personas of a shard's episodes."""
SHARD_WORLD = Stream("shard/world", indices=1, child=(1,))
"""The world draws of a shard's episodes."""
SHARD_POLICY = Stream("shard/policy", indices=1, child=(2,))
"""The sampled actions of a shard's episodes."""
SHARD_PROMPTS = Stream("shard/prompts", indices=1, child=(3,))
"""The prompts and sampled questions of a shard's episodes."""
SHARD_EVENTS = Stream("shard/events", indices=1, after=(tag("shard/events"),))
"""The interventions (gem swaps) of a shard's episodes, for populations that schedule them."""

# --- training ---------------------------------------------------------------------------------------

WORKER_SEED_STRIDE = 7919
"""Ray Train worker ``rank`` samples batches from seed ``seed + WORKER_SEED_STRIDE * rank``."""


def worker_seed(seed: int, rank: int) -> int:
    """The batch-sampling seed of training worker ``rank`` (rank 0: the run's seed)."""
    return int(seed) + WORKER_SEED_STRIDE * int(rank)


BATCH_ORDER = Stream("train/batch_order", indices=1)
"""The permutation of training episodes in epoch ``index`` (seed: ``worker_seed``)."""
BATCH_SAMPLES = Stream("train/batch_samples", indices=1, after=(1 << 20,))
"""The samples picked within the episodes of training step ``index`` (seed: ``worker_seed``)."""
EVAL_SAMPLES = Stream("train/eval_samples", after=(7,))
"""The samples picked from each held-out episode at every evaluation."""
WORD_DROPOUT = Stream("train/word_dropout", indices=1, after=(tag("train/word_dropout"),))
"""The prompt words read as unknown at training step ``index`` (seed: ``worker_seed``)."""
UNREADABLE_POOL = Stream("train/unreadable_pool", after=(tag("train/unreadable_pool"),))
"""The pools of prompts written partly in made-up words (``TrainConfig.unreadable``; seed: the run's)."""
UNREADABLE = Stream("train/unreadable", indices=1, after=(tag("train/unreadable"),))
"""The SELF, OTHER and SECOND samples of training step ``index`` asked such a prompt (seed: ``worker_seed``)."""

# --- RLlib env runners ------------------------------------------------------------------------------

ENV_RUNNER = Stream("rllib/env_runner", indices=2)
"""The env of RLlib env runner (worker, vector) other than (0, 0)."""

# --- probes: one draw stream and one scene-seed family per probe -------------------------------------

PROBE_SEED_BASE = 7_000_003
"""The first entropy word of every probe stream: probe scenes share no stream with datasets."""
PROBES = ("calibration", "compare_direct", "describe", "false_belief", "imitate", "mirror_test", "outcome",
          "second_order", "self", "language")
"""Every probe with streams of its own; a new probe adds its name here."""

PROBE_DRAWS = {p: Stream(f"probe/{p}/draws", before=(PROBE_SEED_BASE, tag(p))) for p in PROBES}
"""A probe's own draws (personas, targets, conditions)."""
PROBE_SCENES = {p: Stream(f"probe/{p}/scene", indices=1, index_in="spawn_key", before=(PROBE_SEED_BASE, tag(p)))
                for p in PROBES}
"""Scene ``index`` of a probe, as an int seed for ``run_scene`` (``int_seed``)."""
COMPARE_DIRECT_LEARNER = Stream("probe/compare_direct/learner", indices=1, index_in="spawn_key", first=1,
                                before=(PROBE_SEED_BASE, tag("compare_direct")))
"""The PPO learner of persona ``index`` in compare-direct (children 1..P; its scene is child P + 1)."""
COMPARE_DIRECT_RUN = Stream("probe/compare_direct/run", indices=2,
                            before=(PROBE_SEED_BASE, tag("compare_direct")), after=(tag("probe/compare_direct/run"),))
"""A vectorised PPO run of compare-direct: (persona, run seed); every learner gets the same one."""
LANGUAGE_WORDINGS = Stream("probe/language/wordings", indices=1, before=(PROBE_SEED_BASE, tag("language")),
                           after=(tag("probe/language/wordings"),))
"""The language probe's own words: index 0 its controls (nonsense words, scrambled orders), 1 the
minimal pairs' colours and styles (its scenes' personas come from ``PROBE_DRAWS``)."""

# --- analysis and benchmarks ------------------------------------------------------------------------

BOOTSTRAP = Stream("analysis/bootstrap")
"""The resamples of a bootstrap interval."""
RANDOM_AGENT = Stream("rllib/random_agent")
"""The uniform actions of the random-agent baseline return."""
BENCHMARK = Stream("benchmarks/draws")
"""A benchmark's scenes and random actions."""
SOAK_CORE_PERSONAS = Stream("benchmarks/soak_core_personas", after=(1,))
"""The personas of the core soak's scenes."""
SOAK_MODEL_PERSONAS = Stream("benchmarks/soak_model_personas", after=(2,))
"""The personas of the model soak's scenes."""

STREAMS: tuple[Stream, ...] = (
    SCENE_WORLD, SCENE_POLICY, SCENE_PERSONAS,
    SHARD_PERSONAS, SHARD_WORLD, SHARD_POLICY, SHARD_PROMPTS, SHARD_EVENTS,
    BATCH_ORDER, BATCH_SAMPLES, EVAL_SAMPLES, WORD_DROPOUT, UNREADABLE_POOL, UNREADABLE, ENV_RUNNER,
    *PROBE_DRAWS.values(), *PROBE_SCENES.values(), COMPARE_DIRECT_LEARNER, COMPARE_DIRECT_RUN, LANGUAGE_WORDINGS,
    BOOTSTRAP, RANDOM_AGENT, BENCHMARK, SOAK_CORE_PERSONAS, SOAK_MODEL_PERSONAS,
)
"""Every stream of the project."""

# Pairs that can give the same stream for one seed. Plain streams are ``default_rng(seed)``; a
# trailing zero word is no word (``[seed, 0]`` is ``seed``), so epoch 0 of the batch order, env
# runner (w, 0) and shard 0 repeat shorter layouts. The streams of each pair are put to different
# uses (a permutation of episodes against a choice of samples, say), never to the same draw.
_PLAIN = (BOOTSTRAP, RANDOM_AGENT, BENCHMARK)
KNOWN_OVERLAPS: frozenset[frozenset[str]] = frozenset(
    frozenset(pair) for pair in (
        *((a.name, b.name) for i, a in enumerate(_PLAIN) for b in _PLAIN[i + 1:]),
        *((p.name, BATCH_ORDER.name) for p in _PLAIN),  # epoch 0
        *((p.name, ENV_RUNNER.name) for p in _PLAIN),  # runner (0, 0), which RLlib seeds otherwise
        (EVAL_SAMPLES.name, BATCH_ORDER.name),  # epoch 7
        (SOAK_CORE_PERSONAS.name, BATCH_ORDER.name),  # epoch 1
        (SOAK_MODEL_PERSONAS.name, BATCH_ORDER.name),  # epoch 2
        (EVAL_SAMPLES.name, ENV_RUNNER.name),  # runner (7, 0)
        (SOAK_CORE_PERSONAS.name, ENV_RUNNER.name),  # runner (1, 0)
        (SOAK_MODEL_PERSONAS.name, ENV_RUNNER.name),  # runner (2, 0)
        (BATCH_ORDER.name, ENV_RUNNER.name),  # runner (w, 0) is epoch w
        (BATCH_SAMPLES.name, BATCH_ORDER.name),  # step 0 is epoch 2**20
        (BATCH_SAMPLES.name, ENV_RUNNER.name),  # step s is runner (2**20, s)
        (SHARD_PERSONAS.name, SCENE_WORLD.name),  # shard 0 of a dataset seed vs a scene of that seed
        (SHARD_WORLD.name, SCENE_POLICY.name),  # shard 0
        (SHARD_POLICY.name, SCENE_PERSONAS.name),  # shard 0
        (COMPARE_DIRECT_LEARNER.name, PROBE_SCENES["compare_direct"].name),  # one family: children 1..P, P + 1
    ))
