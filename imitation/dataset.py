"""Labelled datasets on disk: Parquet shards plus a manifest, written atomically and resumably.

Layout of a dataset folder (schema in docs/dataset.md)::

    DIR/manifest.json          schema version, generator config, counts, per-shard sha256
    DIR/shard-00000.parquet    one row per episode: its states and all its labelled samples

A shard is written to a temporary file in DIR and renamed into place, then the manifest is
rewritten the same way: a half-written shard is never visible, and a re-run skips every shard
the manifest lists with a matching checksum. Shards are a pure function of (config, shard index),
so the same seed gives byte-identical shards whether generated in one process or on Ray.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from mirrorhall.agents.personas import personas_from_json, personas_to_json
from mirrorhall.envs.core import WorldConfig, WorldState
from mirrorhall.errors import DatasetError
from mirrorhall.imitation.prompts import Kind

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FORMAT = "mirrorhall-dataset"
MANIFEST_FIELDS = ("format", "schema_version", "config", "n_shards", "episodes", "samples", "complete", "shards")
SHARD_FIELDS = ("sha256", "bytes", "samples")
SHARD_NAME = re.compile(r"shard-(\d{5})\.parquet")
"""The only file names a manifest may list: nothing outside the dataset folder is ever read."""




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


# --- one shard -> a Parquet table ----------------------------------------------------------------


def _schema():
    import pyarrow as pa

    return pa.schema([
        ("episode", pa.int64()),
        ("population", pa.string()),
        ("personas", pa.string()),
        ("persona_held_out", pa.list_(pa.bool_())),
        ("agent_pos", pa.binary()),
        ("gem_pos", pa.binary()),
        ("actions", pa.binary()),
        ("valued", pa.binary()),
        ("s_agent", pa.list_(pa.int16())),
        ("s_t", pa.list_(pa.int16())),
        ("s_kind", pa.list_(pa.int8())),
        ("s_target", pa.list_(pa.int16())),
        ("s_template", pa.list_(pa.int8())),
        ("s_prompt", pa.list_(pa.string())),
        ("s_prompt_held_out", pa.list_(pa.bool_())),
        ("s_label", pa.list_(pa.float32())),
    ])


def shard_table(cfg: GenerateConfig, shard: int):
    """Label shard ``shard`` and return it as an Arrow table (one row per episode)."""
    import pyarrow as pa

    from mirrorhall.imitation.labels import label_shard

    n_ep = cfg.shard_episodes(shard)
    lab = label_shard(cfg, shard, n_ep)
    order = np.argsort(lab.world, kind="stable")  # samples grouped by episode
    offsets = pa.array(np.searchsorted(lab.world[order], np.arange(n_ep + 1)).astype(np.int32))
    label_offsets = pa.array((offsets.to_numpy() * 5).astype(np.int32))

    def listed(values, dtype, offs=offsets):
        return pa.ListArray.from_arrays(offs, pa.array(values, type=dtype))

    def blobs(arr):  # (T', B, ...) -> B binary blobs of int8 in (T', ...) order
        return pa.array([np.ascontiguousarray(arr[:, w]).astype(np.int8).tobytes() for w in range(n_ep)],
                        type=pa.binary())

    prompts = np.asarray(lab.prompt, dtype=object)[order]
    cols = {
        "episode": pa.array(shard * cfg.episodes_per_shard + np.arange(n_ep), type=pa.int64()),
        "population": pa.array([cfg.population] * n_ep, type=pa.string()),
        "personas": pa.array([personas_to_json(p) for p in lab.personas], type=pa.string()),
        "persona_held_out": pa.array(lab.persona_held_out.tolist(), type=pa.list_(pa.bool_())),
        "agent_pos": blobs(lab.agent_pos),
        "gem_pos": blobs(lab.gem_pos),
        "actions": blobs(lab.actions),
        "valued": blobs(lab.valued[None]),
        "s_agent": listed(lab.agent[order].astype(np.int16), pa.int16()),
        "s_t": listed(lab.t[order].astype(np.int16), pa.int16()),
        "s_kind": listed(lab.kind[order].astype(np.int8), pa.int8()),
        "s_target": listed(lab.target[order].astype(np.int16), pa.int16()),
        "s_template": listed(lab.template[order].astype(np.int8), pa.int8()),
        "s_prompt": listed(prompts, pa.string()),
        "s_prompt_held_out": listed(lab.prompt_held_out[order], pa.bool_()),
        "s_label": listed(lab.label[order].reshape(-1), pa.float32(), label_offsets),
    }
    return pa.table(cols, schema=_schema())


def table_bytes(table) -> bytes:
    """Deterministic Parquet bytes of a table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", use_dictionary=["population", "personas", "s_prompt"],
                   write_statistics=False)
    return sink.getvalue().to_pybytes()


def generate_shard_bytes(cfg_json: dict, shard: int) -> tuple[int, bytes, int]:
    """(shard, Parquet bytes, number of samples): the unit of work, locally or as a Ray task."""
    cfg = GenerateConfig.from_json(cfg_json)
    table = shard_table(cfg, shard)
    n_samples = sum(len(x) for x in table.column("s_kind").to_pylist())
    return shard, table_bytes(table), n_samples


# --- the folder: manifest, atomic writes, resume ---------------------------------------------------


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.parquet"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_manifest(root: Path) -> dict | None:
    """The manifest of ``root``, None if there is none; DatasetError if it cannot be used."""
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DatasetError(f"{path} is not valid JSON; delete the folder and generate again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DatasetError(f"{path} is not a mirrorhall dataset manifest; choose another folder")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise DatasetError(
            f"{path} has schema version {data.get('schema_version')!r}, this mirrorhall reads "
            f"version {SCHEMA_VERSION}; regenerate the dataset with this version"
        )
    for key in MANIFEST_FIELDS:
        if key not in data:
            raise DatasetError(f"{path} lacks the field {key!r}; delete the folder and generate again")
    unknown = sorted(set(data) - set(MANIFEST_FIELDS))
    if unknown:
        raise DatasetError(f"{path} has unknown field(s) {unknown}; it was not written by this mirrorhall")
    if not isinstance(data["config"], dict) or not isinstance(data["shards"], dict):
        raise DatasetError(f"{path}: 'config' and 'shards' must be JSON objects; the manifest is damaged")
    for key in ("n_shards", "episodes", "samples"):
        if not _count(data[key]):
            raise DatasetError(f"{path}: {key!r} must be a non-negative integer, got {data[key]!r}")
    for name, entry in data["shards"].items():
        m = SHARD_NAME.fullmatch(name)
        if not m or int(m.group(1)) >= data["n_shards"]:
            raise DatasetError(f"{path} lists a shard named {name!r}; shard names are shard-NNNNN.parquet "
                               f"with NNNNN < n_shards ({data['n_shards']}); refusing to use it")
        if (not isinstance(entry, dict) or set(entry) != set(SHARD_FIELDS)
                or not isinstance(entry["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
                or not _count(entry["bytes"]) or not _count(entry["samples"])):
            raise DatasetError(f"{path}: the entry of {name} must be {{'sha256': 64 hex digits, 'bytes': n, "
                               "'samples': n}; the manifest is damaged")
    return data


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _config_from_manifest(root: Path, manifest: dict) -> GenerateConfig:
    try:
        return GenerateConfig.from_json(manifest["config"])
    except (ValueError, TypeError) as err:
        raise DatasetError(f"{Path(root) / MANIFEST}: bad generator config ({err})") from None


def _new_manifest(cfg: GenerateConfig) -> dict:
    return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "config": cfg.to_json(),
            "n_shards": cfg.n_shards, "episodes": cfg.episodes, "samples": 0, "complete": False,
            "shards": {}}


def _write_manifest(root: Path, manifest: dict) -> None:
    manifest["samples"] = sum(s["samples"] for s in manifest["shards"].values())
    manifest["complete"] = len(manifest["shards"]) == manifest["n_shards"]
    atomic_write(Path(root) / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())


def verify_shard(root: Path, name: str, entry: dict) -> None:
    path = Path(root) / name
    if not path.exists():
        raise DatasetError(f"{path} is listed in the manifest but missing; re-run generate to rebuild it")
    if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
        raise DatasetError(
            f"{path} is truncated or corrupted (checksum mismatch); delete it and re-run "
            "generate with the same arguments to rebuild it"
        )


def prepare(root: Path, cfg: GenerateConfig) -> tuple[dict, list[int]]:
    """Open or create the dataset folder; return the manifest and the shards still to write."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root} is a file, not a folder; choose another --out")
    manifest = read_manifest(root)
    if manifest is None:
        if root.exists() and any(p for p in root.iterdir() if not p.name.startswith(".")):
            raise DatasetError(f"{root} is not empty and holds no mirrorhall dataset; choose another --out")
        manifest = _new_manifest(cfg)
        _write_manifest(root, manifest)
    elif manifest["config"] != cfg.to_json():
        _config_from_manifest(root, manifest)  # a damaged config is named as such, not as a difference
        old = manifest["config"]
        diff = ", ".join(f"{k}={old.get(k)!r} here vs {v!r} asked" for k, v in cfg.to_json().items()
                         if old.get(k) != v)
        raise DatasetError(f"{root} holds a different dataset ({diff}); choose another --out")
    for name, entry in list(manifest["shards"].items()):
        if (root / name).exists():
            verify_shard(root, name, entry)
        else:  # deleted by the user (as a corruption message advises): generate it again
            del manifest["shards"][name]
    for stale in root.glob(".*.tmp"):  # left by a killed run; never a visible shard
        stale.unlink()
    todo = [s for s in range(cfg.n_shards) if shard_name(s) not in manifest["shards"]]
    return manifest, todo


def record_shard(root: Path, manifest: dict, shard: int, data: bytes, n_samples: int) -> None:
    """Write one shard atomically, then list it in the manifest."""
    name = shard_name(shard)
    atomic_write(Path(root) / name, data)
    manifest["shards"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                                "samples": n_samples}
    manifest["shards"] = dict(sorted(manifest["shards"].items()))
    _write_manifest(root, manifest)


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


# --- reading -------------------------------------------------------------------------------------


@dataclass
class Episode:
    """One stored episode, decoded: enough to rebuild every observation exactly."""

    episode: int
    personas: tuple
    agent_pos: np.ndarray  # (T + 1, N, 2)
    gem_pos: np.ndarray  # (T + 1, G, 2)
    actions: np.ndarray  # (T, N)
    valued: np.ndarray  # (N,)
    agent: np.ndarray  # (S,) samples
    t: np.ndarray
    kind: np.ndarray
    target: np.ndarray
    template: np.ndarray
    prompt: list
    prompt_held_out: np.ndarray
    label: np.ndarray  # (S, 5)

    def world_states(self, world: WorldConfig) -> WorldState:
        """Every time step as one batch: a WorldState with B = T + 1 (``core.situations`` etc.)."""
        from mirrorhall.envs.core import NO_ACTION, WorldCore

        steps = self.agent_pos.shape[0]
        last = np.concatenate([np.full((1, world.n_agents), NO_ACTION), self.actions], axis=0)
        return WorldState(
            agent_pos=self.agent_pos.astype(np.int64), gem_pos=self.gem_pos.astype(np.int64),
            gem_color=WorldCore(world).gem_color.copy(), last_action=last.astype(np.int64),
            valued=np.broadcast_to(self.valued.astype(np.int64), (steps, world.n_agents)).copy(),
            collected=np.zeros((steps, world.n_agents, world.n_colors), np.int64), t=0,
        )


class Dataset:
    """A generated dataset folder, checked against its manifest when opened."""

    def __init__(self, root, verify: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root} is not a folder holding a dataset; run mirrorhall generate first")
        manifest = read_manifest(self.root)
        if manifest is None:
            raise DatasetError(f"{self.root} has no {MANIFEST}; run mirrorhall generate --out {self.root}")
        self.manifest = manifest
        self.config = _config_from_manifest(self.root, manifest)
        self.world = self.config.world()
        if verify:
            for name, entry in manifest["shards"].items():
                verify_shard(self.root, name, entry)

    @property
    def shard_paths(self) -> list[Path]:
        return [self.root / name for name in self.manifest["shards"]]

    @property
    def n_samples(self) -> int:
        return self.manifest["samples"]

    def read_table(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise DatasetError(f"{path} cannot be read as Parquet ({str(err).splitlines()[0]}); "
                               "delete it and re-run generate") from None
        if table.schema.names != _schema().names:
            raise DatasetError(f"{path} has an unknown schema; regenerate the dataset")
        return table

    def episodes(self) -> Iterator[Episode]:
        for path in self.shard_paths:
            yield from self.shard_episodes(path)

    def shard_episodes(self, path: Path) -> Iterator[Episode]:
        """The episodes of one shard, in order."""
        for row in self.read_table(path).to_pylist():
            try:
                episode = decode_row(row, self.world)
            except (ValueError, TypeError, KeyError) as err:
                raise DatasetError(f"{path}: episode {row.get('episode')!r} cannot be decoded "
                                   f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                                   "regenerate the dataset") from None
            yield episode


def decode_row(row: dict, world: WorldConfig) -> Episode:
    """One Parquet row (a dict, as pandas or Ray Data give it) -> an Episode."""
    n, g = world.n_agents, world.n_gems

    def arr(key, shape):
        return np.frombuffer(row[key], dtype=np.int8).reshape(shape)

    actions = arr("actions", (-1, n))
    steps = actions.shape[0]
    return Episode(
        episode=int(row["episode"]), personas=personas_from_json(row["personas"]),
        agent_pos=arr("agent_pos", (steps + 1, n, 2)), gem_pos=arr("gem_pos", (steps + 1, g, 2)),
        actions=actions, valued=arr("valued", (n,)),
        agent=np.asarray(row["s_agent"], np.int64), t=np.asarray(row["s_t"], np.int64),
        kind=np.asarray(row["s_kind"], np.int64), target=np.asarray(row["s_target"], np.int64),
        template=np.asarray(row["s_template"], np.int64), prompt=list(row["s_prompt"]),
        prompt_held_out=np.asarray(row["s_prompt_held_out"], bool),
        label=np.asarray(row["s_label"], np.float32).reshape(-1, 5),
    )
