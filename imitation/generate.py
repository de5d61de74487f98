"""Generating a labelled dataset: the generator's config and the fan-out of shards.

``mirrorhall generate`` runs scenes of a population, labels them (``imitation/labels.py``) and
stores them (``imitation/shards.py``). Shards are a pure function of (config, shard index), so the
same seed gives byte-identical shards whether generated in one process, in ``processes`` local
processes or as Ray tasks; the manifest lists shards by name, so it does not depend on the fan-out
either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


def ordered_map(fn: Callable, args: list[tuple], processes: int = 1) -> Iterator:
    """``fn(*a)`` for each ``a`` of ``args``, in order: in this process, or in ``processes``
    spawned local processes (never forked: the caller may hold threads)."""
    if processes <= 1 or len(args) < 2:
        for a in args:
            yield fn(*a)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(fn, *zip(*args, strict=True))


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
    if workers <= 0 and ray_address is None:
        for shard, data, n in ordered_map(generate_shard_bytes, [(cfg.to_json(), s) for s in todo], processes):
            record_shard(out, manifest, shard, data, n)
            if progress:
                progress(1, n)
        return manifest

    from mirrorhall.raykit import ray_session

    with ray_session(address=ray_address, num_cpus=max(workers, 1)) as ray:
        task = ray.remote(num_cpus=1)(generate_shard_bytes)
        pending = [task.remote(cfg.to_json(), s) for s in todo]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            shard, data, n = ray.get(done[0])
            record_shard(out, manifest, shard, data, n)
            if progress:
                progress(1, n)
    return manifest
