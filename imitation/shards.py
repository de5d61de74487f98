"""A dataset folder on disk: the shard schema, the manifest, checksums and reading.

Layout of a dataset folder (schema in docs/dataset.md)::

    DIR/manifest.json          schema version, generator config, counts, per-shard sha256
    DIR/shard-00000.parquet    one row per episode: its states and all its labelled samples

Every array is an Arrow list column of numbers (schema version 2), so pandas, polars, DuckDB and
Ray Data read arrays, not bytes; multi-dimensional arrays are flattened in C order and each row
carries the sizes (``steps``, ``agents``, ``gems``) to reshape them. Version 1 (the same arrays
as int8 binary blobs) is still read. Version 3 is version 2 plus an ``events`` column (each
episode's interventions as a JSON list): it is written for populations that schedule events
(``swap_rate`` > 0), version 2 for every other, so datasets without events are unchanged.

A shard is written to a temporary file in DIR and renamed into place, then the manifest is
rewritten the same way: a half-written shard is never visible, and a re-run skips every shard
the manifest lists with a matching checksum. What goes into a shard is decided in
``imitation/generate.py``; this module only stores and reads it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mirrorhall.agents.personas import personas_from_json, personas_to_json
from mirrorhall.envs.core import WorldConfig, WorldState
from mirrorhall.errors import DatasetError
from mirrorhall.files import atomic_write, sha256_file
from mirrorhall.validate import Source

if TYPE_CHECKING:
    from mirrorhall.imitation.generate import GenerateConfig
    from mirrorhall.imitation.labels import LabelledShard

SCHEMA_VERSION = 2
"""The version this mirrorhall writes for datasets without interventions."""
EVENTS_SCHEMA_VERSION = 3
"""The version it writes for populations that schedule interventions: 2 plus an ``events`` column."""
READ_VERSIONS = (1, 2, 3)
"""The versions it reads: 1 stored positions, actions and valued colours as int8 binary blobs."""


def schema_version_for(population: str) -> int:
    """The schema version of a dataset of ``population``: 3 where it schedules events, else 2."""
    from mirrorhall.agents.populations import get_population

    return EVENTS_SCHEMA_VERSION if get_population(population).swap_rate > 0 else SCHEMA_VERSION
MANIFEST = "manifest.json"
FORMAT = "mirrorhall-dataset"
MANIFEST_FIELDS = ("format", "schema_version", "config", "n_shards", "episodes", "samples", "complete", "shards")
SHARD_FIELDS = ("sha256", "bytes", "samples")
SHARD_NAME = re.compile(r"shard-(\d{5})\.parquet")
"""The only file names a manifest may list: nothing outside the dataset folder is ever read."""


# --- one shard -> a Parquet table ----------------------------------------------------------------


_SAMPLE_COLUMNS = (
    ("s_agent", "int16"), ("s_t", "int16"), ("s_kind", "int8"), ("s_target", "int16"),
    ("s_template", "int8"), ("s_prompt", "string"), ("s_prompt_held_out", "bool_"), ("s_label", "float32"),
)


def _schema(version: int = SCHEMA_VERSION):
    """The Arrow schema of a shard of ``version``."""
    import pyarrow as pa

    head = [("episode", pa.int64()), ("population", pa.string()), ("personas", pa.string()),
            ("persona_held_out", pa.list_(pa.bool_()))]
    samples = [(name, pa.list_(getattr(pa, kind)())) for name, kind in _SAMPLE_COLUMNS]
    if version == 1:
        arrays = [(name, pa.binary()) for name in ("agent_pos", "gem_pos", "actions", "valued")]
    else:
        arrays = [("steps", pa.int16()), ("agents", pa.int16()), ("gems", pa.int16()),
                  *((name, pa.list_(pa.int8())) for name in ("agent_pos", "gem_pos", "actions", "valued"))]
    events = [("events", pa.string())] if version >= EVENTS_SCHEMA_VERSION else []
    return pa.schema(head + arrays + samples + events)


def shard_table(lab: LabelledShard, population: str, first_episode: int):
    """The Arrow table (one row per episode) of a labelled shard whose first episode has the
    global index ``first_episode``."""
    import pyarrow as pa

    n_ep = len(lab.personas)
    order = np.argsort(lab.world, kind="stable")  # samples grouped by episode
    offsets = pa.array(np.searchsorted(lab.world[order], np.arange(n_ep + 1)).astype(np.int32))
    label_offsets = pa.array((offsets.to_numpy() * 5).astype(np.int32))

    def listed(values, dtype, offs=offsets):
        return pa.ListArray.from_arrays(offs, pa.array(values, type=dtype))

    def per_episode(arr):  # (T', B, ...) -> B lists of int8, each episode's (T', ...) in C order
        flat = np.ascontiguousarray(np.moveaxis(arr, 1, 0)).astype(np.int8).reshape(n_ep, -1)
        offs = (np.arange(n_ep + 1) * flat.shape[1]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offs), pa.array(flat.reshape(-1), type=pa.int8()))

    steps, n_agents, n_gems = lab.actions.shape[0], lab.actions.shape[2], lab.gem_pos.shape[2]
    prompts = np.asarray(lab.prompt, dtype=object)[order]
    cols = {
        "episode": pa.array(first_episode + np.arange(n_ep), type=pa.int64()),
        "population": pa.array([population] * n_ep, type=pa.string()),
        "personas": pa.array([personas_to_json(p) for p in lab.personas], type=pa.string()),
        "persona_held_out": pa.array(lab.persona_held_out.tolist(), type=pa.list_(pa.bool_())),
        "steps": pa.array([steps] * n_ep, type=pa.int16()),
        "agents": pa.array([n_agents] * n_ep, type=pa.int16()),
        "gems": pa.array([n_gems] * n_ep, type=pa.int16()),
        "agent_pos": per_episode(lab.agent_pos),
        "gem_pos": per_episode(lab.gem_pos),
        "actions": per_episode(lab.actions),
        "valued": per_episode(lab.valued[None]),
        "s_agent": listed(lab.agent[order].astype(np.int16), pa.int16()),
        "s_t": listed(lab.t[order].astype(np.int16), pa.int16()),
        "s_kind": listed(lab.kind[order].astype(np.int8), pa.int8()),
        "s_target": listed(lab.target[order].astype(np.int16), pa.int16()),
        "s_template": listed(lab.template[order].astype(np.int8), pa.int8()),
        "s_prompt": listed(prompts, pa.string()),
        "s_prompt_held_out": listed(lab.prompt_held_out[order], pa.bool_()),
        "s_label": listed(lab.label[order].reshape(-1), pa.float32(), label_offsets),
    }
    version = schema_version_for(population)
    if version >= EVENTS_SCHEMA_VERSION:
        schedules = lab.events or [()] * n_ep
        cols["events"] = pa.array([json.dumps([e.to_json() for e in row]) for row in schedules], type=pa.string())
    return pa.table(cols, schema=_schema(version))


def table_bytes(table) -> bytes:
    """Deterministic Parquet bytes of a table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", use_dictionary=["population", "personas", "s_prompt"],
                   write_statistics=False)
    return sink.getvalue().to_pybytes()


# --- the folder: manifest, atomic writes, resume ---------------------------------------------------


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.parquet"


def read_manifest(root: Path) -> dict | None:
    """The manifest of ``root``, None if there is none; DatasetError if it cannot be used."""
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    src = Source(path, DatasetError, "delete the folder and generate again")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not valid JSON; delete the folder and generate again") from None
    data = src.load_json(text)  # strict: NaN, Infinity and huge numbers are refused here
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DatasetError(f"{path} is not a mirrorhall dataset manifest; choose another folder")
    if data.get("schema_version") not in READ_VERSIONS:
        raise DatasetError(
            f"{path} has schema version {data.get('schema_version')!r}, this mirrorhall reads "
            f"versions {' and '.join(map(str, READ_VERSIONS))}; regenerate the dataset with this version"
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
    # the generator's config type lives with the generator, which imports this module
    from mirrorhall.imitation.generate import GenerateConfig

    try:
        return GenerateConfig.from_json(manifest["config"])
    except (ValueError, TypeError) as err:
        raise DatasetError(f"{Path(root) / MANIFEST}: bad generator config ({err})") from None


def _new_manifest(cfg: GenerateConfig) -> dict:
    return {"format": FORMAT, "schema_version": schema_version_for(cfg.population), "config": cfg.to_json(),
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


def prepare(root: Path, cfg: GenerateConfig) -> tuple[dict, Iterator[int]]:
    """Open or create the dataset folder; return the manifest and the shards still to write, in
    order, as an iterator (a list would hold 31 million indices for 10**9 episodes)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root} is a file, not a folder; choose another --out")
    manifest = read_manifest(root)
    if manifest is None:
        if root.exists() and any(p for p in root.iterdir() if not p.name.startswith(".")):
            raise DatasetError(f"{root} is not empty and holds no mirrorhall dataset; choose another --out")
        manifest = _new_manifest(cfg)
        _write_manifest(root, manifest)
    elif manifest["schema_version"] != schema_version_for(cfg.population):
        raise DatasetError(f"{root} holds a dataset of schema version {manifest['schema_version']}, this "
                           f"mirrorhall writes version {schema_version_for(cfg.population)}; choose another --out (the old "
                           "dataset stays readable)")
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
    done = frozenset(manifest["shards"])
    todo = (s for s in range(cfg.n_shards) if not done or shard_name(s) not in done)
    return manifest, todo


def record_shard(root: Path, manifest: dict, shard: int, data: bytes, n_samples: int) -> None:
    """Write one shard atomically, then list it in the manifest."""
    name = shard_name(shard)
    atomic_write(Path(root) / name, data)
    manifest["shards"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                                "samples": n_samples}
    manifest["shards"] = dict(sorted(manifest["shards"].items()))
    _write_manifest(root, manifest)


# --- reading -------------------------------------------------------------------------------------


@dataclass
class StoredEpisode:
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
    events: tuple = ()
    """The episode's interventions (``WorldEvent``), in order; () for none (and for schema versions
    1 and 2). The stored gem positions already show them."""

    def world_states(self, world: WorldConfig) -> WorldState:
        """Every time step as one batch: a WorldState with B = T + 1 (for the perception module)."""
        from mirrorhall.envs.core import NO_ACTION, WorldCore

        last = np.concatenate([np.full((1, world.n_agents), NO_ACTION), self.actions], axis=0)
        return WorldCore(world).recorded_state(self.agent_pos, self.gem_pos, last, self.valued)


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
        self.schema_version: int = manifest["schema_version"]
        self.config = _config_from_manifest(self.root, manifest)
        self.world = self.config.world()
        if not manifest["shards"]:
            raise DatasetError(f"{self.root / MANIFEST} lists no shards; run mirrorhall generate --out {self.root} "
                               "with the same arguments to write them")
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
        if table.schema.names != _schema(self.schema_version).names:
            raise DatasetError(f"{path} does not have the columns of schema version {self.schema_version} "
                               "(docs/dataset.md); regenerate the dataset")
        return table

    def check_values(self) -> None:
        """Decode every episode once, so a hostile value is refused here, in one line, rather than
        wherever the episodes are read later (Ray Train workers decode rows themselves)."""
        for path in self.shard_paths:
            for _ in self.shard_episodes(path):
                pass

    def episodes(self) -> Iterator[StoredEpisode]:
        for path in self.shard_paths:
            yield from self.shard_episodes(path)

    def shard_episodes(self, path: Path) -> Iterator[StoredEpisode]:
        """The episodes of one shard, in order."""
        table = self.read_table(path)
        samples = 0
        for row in (table.to_pylist() if self.schema_version == 1 else _rows(table)):
            try:
                episode = decode_row(row, self.world)
            except (ValueError, TypeError, KeyError) as err:
                raise DatasetError(f"{path}: episode {row.get('episode')!r} cannot be decoded "
                                   f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                                   "regenerate the dataset") from None
            samples += len(episode.agent)
            yield episode
        listed = self.manifest["shards"].get(Path(path).name, {}).get("samples")
        if listed is not None and samples != listed:
            raise DatasetError(f"{path} holds {samples} samples, the manifest lists {listed}; regenerate the dataset")


def _rows(table) -> Iterator[dict]:
    """The rows of a table as dicts of numpy arrays (one per list column): what pandas and Ray Data
    give, without converting every number to a Python object."""
    import pyarrow as pa

    cols = {}
    for name in table.schema.names:
        col = table.column(name).combine_chunks()
        if pa.types.is_list(col.type):  # its values, and row r at offsets[r]:offsets[r + 1]
            cols[name] = (col.values.to_numpy(zero_copy_only=False), col.offsets.to_numpy())
        else:  # one value per row: Python objects, as to_pylist gives them
            cols[name] = (col.to_pylist(), None)
    for r in range(table.num_rows):
        yield {name: values[r] if offs is None else values[offs[r]:offs[r + 1]]
               for name, (values, offs) in cols.items()}


ROW = Source(None, ValueError)
"""Checks of one shard row; ``Dataset.shard_episodes`` names the file, the episode and the fix."""
LABEL_SUM_TOLERANCE = 1e-3
"""A stored label is a distribution over the 5 actions: float32 values summing to 1 within this."""


def decode_row(row, world: WorldConfig) -> StoredEpisode:
    """One Parquet row (a mapping, as pandas or Ray Data give it) of either schema version -> an
    StoredEpisode. Version 1 rows hold int8 binary blobs; version 2 rows flat int8 lists and their sizes.

    Every value is checked where it enters (``check_episode``): a row that decodes is safe to
    index with, whatever file it came from; otherwise ``ValueError`` names the column."""
    n, g = world.n_agents, world.n_gems
    if "agents" in row:
        steps = ROW.int_in_range(int(row["steps"]), 0, world.max_cycles, "steps")
        if (int(row["agents"]), int(row["gems"])) != (n, g):
            raise ValueError(f"{row['agents']} agents and {row['gems']} gems, the manifest's world has {n} and {g}")

        def arr(key, shape):
            return np.asarray(row[key], dtype=np.int8).reshape(shape)
    else:
        def arr(key, shape):
            return np.frombuffer(row[key], dtype=np.int8).reshape(shape)

        steps = len(row["actions"]) // n

    episode = StoredEpisode(
        episode=int(row["episode"]), personas=personas_from_json(row["personas"]),
        agent_pos=arr("agent_pos", (steps + 1, n, 2)), gem_pos=arr("gem_pos", (steps + 1, g, 2)),
        actions=arr("actions", (steps, n)), valued=arr("valued", (n,)),
        agent=np.asarray(row["s_agent"], np.int64), t=np.asarray(row["s_t"], np.int64),
        kind=np.asarray(row["s_kind"], np.int64), target=np.asarray(row["s_target"], np.int64),
        template=np.asarray(row["s_template"], np.int64), prompt=list(row["s_prompt"]),
        prompt_held_out=np.asarray(row["s_prompt_held_out"], bool),
        label=np.asarray(row["s_label"], np.float32).reshape(-1, 5),
        events=_decode_events(row.get("events"), world),
    )
    check_episode(episode, world, n_persona_flags=len(row["persona_held_out"]))
    return episode


def _decode_events(text, world: WorldConfig) -> tuple:
    """The ``events`` column of a version 3 row (a JSON list), checked against the world; ()
    where the row has none."""
    if text is None:
        return ()
    from mirrorhall.envs.core import check_events

    if not isinstance(text, str):
        raise ValueError("events must be a JSON text")
    return check_events(json.loads(text), world, "events")


def check_episode(ep: StoredEpisode, world: WorldConfig, n_persona_flags: int | None = None) -> None:
    """``ValueError`` naming the first column of ``ep`` holding a value outside its range: positions
    inside the grid, actions 0..4, sample agents, times and targets inside the episode, labels
    finite distributions."""
    from mirrorhall.envs.core import ANY_COLOR, N_ACTIONS
    from mirrorhall.imitation.prompts import Kind

    n, steps = world.n_agents, ep.actions.shape[0]
    ROW.int_in_range(ep.episode, 0, 2**62, "episode")
    if len(ep.personas) != n or (n_persona_flags is not None and n_persona_flags != n):
        raise ValueError(f"personas and persona_held_out must list the world's {n} agents, "
                         f"got {len(ep.personas)} and {n_persona_flags}")
    for name in ("agent_pos", "gem_pos"):
        pos = getattr(ep, name)
        ROW.array_in_range(pos[..., 0], 0, world.height - 1, f"{name} (rows of the grid)")
        ROW.array_in_range(pos[..., 1], 0, world.width - 1, f"{name} (columns of the grid)")
    ROW.array_in_range(ep.actions, 0, N_ACTIONS - 1, "actions")
    ROW.array_in_range(ep.valued, ANY_COLOR, world.n_colors - 1, "valued")
    s = len(ep.agent)
    for name in ("t", "kind", "target", "template", "prompt", "prompt_held_out", "label"):
        if len(getattr(ep, name)) != s:
            raise ValueError(f"s_{name} holds {len(getattr(ep, name))} samples, s_agent {s}")
    ROW.array_in_range(ep.agent, 0, n - 1, "s_agent (agents of the scene)")
    ROW.array_in_range(ep.t, 0, steps - 1, "s_t (steps of the episode)")
    ROW.array_in_range(ep.kind, 0, len(Kind) - 1, "s_kind")
    ROW.array_in_range(ep.target, -1, n - 1, "s_target (agents of the scene, or -1)")
    ROW.array_in_range(ep.template, 0, 127, "s_template")
    if not all(isinstance(p, str) for p in ep.prompt):
        raise ValueError("s_prompt must hold texts")
    ROW.all_finite(ep.label, "s_label")
    ROW.array_in_range(ep.label, 0.0, 1.0, "s_label (probabilities)")
    sums = ep.label.sum(-1, dtype=np.float64)
    off = np.abs(sums - 1) > LABEL_SUM_TOLERANCE
    if off.any():
        i = int(np.argmax(off))
        raise ValueError(f"s_label of sample {i} sums to {sums[i]:.6g}, not 1 (a distribution over the "
                         f"{N_ACTIONS} actions)")
