"""Generating a labelled dataset: the generator's config and the fan-out of shards.

``mirrorhall generate`` runs scenes of a population, labels them (``imitation/labels.py``) and
stores them (``imitation/shards.py``). Shards are a pure function of (config, shard index), so the
same seed gives byte-identical shards whether generated in one process, in ``processes`` local
processes or as Ray tasks; the manifest lists shards by name, so it does not depend on the fan-out
either.

Work is streamed, never planned: the shards still to write are an iterator over shard indices and
only a few shards per worker are in flight at any time, so the first shard of a dataset of 10**9
episodes is written as soon as that of a small one, and memory does not grow with ``episodes``.
Local worker processes die with the process that started them, ``kill -9`` included
(``die_with_parent``).
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from mirrorhall.envs.core import WorldConfig
from mirrorhall.imitation.prompts import Kind
from mirrorhall.imitation.shards import prepare, record_shard, shard_table, table_bytes


@dataclass(frozen=True)
class GenerateConfig:
    """``mirrorhall generate``: which scenes to run and how to label them."""

    population: str = "crowd"
    """Registered population the scenes are drawn from."""
    episodes: int = 256
    """Number of episodes (scenes) in the dataset."""
    seed: int = 0
    """Seed of everything: personas, worlds, actions, prompts."""
    agents: int = 8
    steps: int = 40
    """Steps per episode."""
    width: int = 11
    height: int = 11
    colors: int = 4
    view_radius: int | None = None
    episodes_per_shard: int = 32
    """Episodes per shard (run together as one batch)."""
    prompts_per_step: int = 2
    """Labelled prompts per agent per step."""
    kind_weights: tuple[float, ...] = (0.2, 0.2, 0.3, 0.2, 0.1)
    """Sampling weights of SELF, DESCRIBE, OTHER, SECOND, RETURN."""
    varied_share: float = 0.02
    """Share of labelled prompts written in a random training form with a random surface
    (docs/prompts.md); the rest use the canonical wording. Training encodes each distinct prompt
    of a batch once, so this share sets the prompt encoder's cost per step (about
    samples_per_step * varied_share varied prompts, beside about a hundred canonical ones)."""

    describe_follow: float = 0.0
    """Share of DESCRIBE labels that describe a trait persona following a named agent ("a casual
    agent that likes red gems and follows agent 3"; any training likes and style, any agent but the
    one asked), whatever social terms the population's own personas have: the model then reads
    "agent k" inside a description as well as in OTHER and SECOND prompts."""

    def __post_init__(self):
        from mirrorhall.agents.populations import get_population

        get_population(self.population)
        for name in ("episodes", "agents", "steps", "episodes_per_shard", "prompts_per_step"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        w = tuple(float(x) for x in self.kind_weights)
        if len(w) != len(Kind) or any(x < 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"kind_weights must be {len(Kind)} non-negative weights (SELF, DESCRIBE, "
                             f"OTHER, SECOND, RETURN) with a positive sum, got {self.kind_weights!r}")
        object.__setattr__(self, "kind_weights", w)
        if isinstance(self.varied_share, bool) or not isinstance(self.varied_share, int | float) \
                or not 0.0 <= self.varied_share <= 1.0:
            raise ValueError(f"varied_share must be a number in [0, 1], got {self.varied_share!r}")
        object.__setattr__(self, "varied_share", float(self.varied_share))
        if isinstance(self.describe_follow, bool) or not isinstance(self.describe_follow, int | float) \
                or not 0.0 <= self.describe_follow <= 1.0:
            raise ValueError(f"describe_follow must be a number in [0, 1], got {self.describe_follow!r}")
        object.__setattr__(self, "describe_follow", float(self.describe_follow))
        self.world()

    def world(self) -> WorldConfig:
        return WorldConfig(n_agents=self.agents, width=self.width, height=self.height,
                           n_colors=self.colors, view_radius=self.view_radius,
                           max_cycles=self.steps)

    @property
    def n_shards(self) -> int:
        return -(-self.episodes // self.episodes_per_shard)

    def shard_episodes(self, shard: int) -> int:
        return min(self.episodes_per_shard, self.episodes - shard * self.episodes_per_shard)

    def to_json(self) -> dict:
        d = asdict(self)
        d["kind_weights"] = list(self.kind_weights)
        return d

    @classmethod
    def from_json(cls, data: dict) -> GenerateConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown generator config field(s) {sorted(unknown)}")
        data = dict(data)
        if "kind_weights" in data:
            data["kind_weights"] = tuple(data["kind_weights"])
        return cls(**data)


def generate_shard_bytes(cfg_json: dict, shard: int) -> tuple[int, bytes, int]:
    """(shard, Parquet bytes, number of samples): the unit of work, locally or as a Ray task."""
    from mirrorhall.imitation.labels import label_shard

    cfg = GenerateConfig.from_json(cfg_json)
    lab = label_shard(cfg, shard, cfg.shard_episodes(shard))
    table = shard_table(lab, cfg.population, shard * cfg.episodes_per_shard)
    return shard, table_bytes(table), len(lab.kind)


IN_FLIGHT_PER_WORKER = 2
"""Calls in flight per worker: enough to keep every worker busy, few enough that memory does not
depend on how many calls there are."""

PARENT_POLL_S = 0.5
"""How often a worker's watchdog checks that the process that started it is still alive."""


def die_with_parent(parent: int) -> None:
    """Make this (worker) process die with ``parent``, the process that started it, ``kill -9``
    included: the initializer of every local worker pool.

    On Linux the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); as that signal
    follows the parent *thread* that started the worker, and does not exist elsewhere, a daemon
    thread also polls the parent pid and exits the process once it changes (the orphan has been
    re-parented). A parent that died before any of this was set up is caught by the first check.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="mirrorhall-parent-watchdog", daemon=True).start()


def ordered_map(fn: Callable, args: Iterable[tuple], processes: int = 1) -> Iterator:
    """``fn(*a)`` for each ``a`` of ``args``, in order: in this process, or in ``processes``
    spawned local processes (never forked: the caller may hold threads).

    ``args`` is consumed lazily and at most ``IN_FLIGHT_PER_WORKER * processes`` calls are in
    flight, so it may be as long as it likes (an iterator). The workers die with this process
    (``die_with_parent``); the pool is started and fed by the thread that iterates.
    """
    args = iter(args)
    head = list(itertools.islice(args, 2))
    if processes <= 1 or len(head) < 2:
        for a in itertools.chain(head, args):
            yield fn(*a)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        pending: deque = deque()
        try:
            for a in itertools.chain(head, args):
                pending.append(pool.submit(fn, *a))
                if len(pending) >= IN_FLIGHT_PER_WORKER * processes:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # a consumer that stops early (an error downstream) waits for no queued call
            pool.shutdown(wait=True, cancel_futures=True)


def generate(cfg: GenerateConfig, out: Path, workers: int = 0, ray_address: str | None = None,
             progress: Callable[[int, int], None] | None = None, processes: int = 1) -> dict:
    """Generate (or finish) the dataset ``cfg`` in ``out``; returns the manifest.

    ``workers`` = 0 runs on this machine, in ``processes`` local processes (shards are recorded in
    order, so the bytes do not depend on the count); otherwise shards fan out as Ray tasks on a
    local loopback Ray instance with that many CPUs, or on the cluster at ``ray_address``.
    """
    out = Path(out)
    manifest, todo = prepare(out, cfg)
    if progress:
        progress(len(manifest["shards"]), manifest["samples"])
    cfg_json = cfg.to_json()
    if workers <= 0 and ray_address is None:
        for shard, data, n in ordered_map(generate_shard_bytes, ((cfg_json, s) for s in todo), processes):
            record_shard(out, manifest, shard, data, n)
            if progress:
                progress(1, n)
        return manifest

    from mirrorhall.raykit import ray_session

    with ray_session(address=ray_address, num_cpus=max(workers, 1)) as ray:
        task = ray.remote(num_cpus=1)(generate_shard_bytes)
        cpus = max(workers, 1) if ray_address is None else max(int(ray.cluster_resources().get("CPU", 1)), 1)
        config_ref = ray.put(cfg_json)
        pending: list = []
        while True:  # keep a few tasks per CPU in flight; submit the next as each one lands
            pending.extend(task.remote(config_ref, s)
                           for s in itertools.islice(todo, IN_FLIGHT_PER_WORKER * cpus - len(pending)))
            if not pending:
                break
            done, pending = ray.wait(pending, num_returns=1)
            shard, data, n = ray.get(done[0])
            record_shard(out, manifest, shard, data, n)
            if progress:
                progress(1, n)
    return manifest
