"""Checkpoints: safetensors weights + JSON metadata. Loading never unpickles anything.

A checkpoint is a folder::

    model.safetensors       the model's weights (a run with ``--ema``: the averaged weights)
    optimizer.safetensors   AdamW moments (only in training checkpoints)
    training-weights.safetensors
                            the weights the optimizer moves, where they are not the model's (only
                            in training checkpoints of a run with ``--ema``)
    checkpoint.json         format, model config, run config, tokenizer vocabulary, dataset id,
                            step, data position, metrics, optimizer hyper-parameters, and the
                            sha256 of each weights file

A run folder holds ``checkpoints/step-NNNNNNNN/`` folders and ``latest.json`` naming the newest;
``resolve_checkpoint`` accepts either a checkpoint folder or a run folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from mirrorhall.agents.populations import POPULATIONS, is_population
from mirrorhall.errors import CheckpointError  # noqa: F401 (re-exported)
from mirrorhall.files import atomic_write, sha256_file, undo_on_failure
from mirrorhall.imitation.average import WeightAverage
from mirrorhall.imitation.model import ModelConfig, MultiPolicyModel
from mirrorhall.imitation.tokenizer import Tokenizer
from mirrorhall.validate import (
    BOOL,
    COUNT,
    NULL,
    NUMBER,
    OBJECT,
    TEXT,
    Kind,
    Source,
    list_of,
    short,
)

NONNEGATIVE = Kind("a finite non-negative number", lambda v: NUMBER(v) and v >= 0)

FORMAT = "mirrorhall-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 2 adds the n-gram tokenizer and the model config's ngram_buckets and positions; a
version-1 checkpoint (word tokenizer, absolute positions) reads exactly as before."""
META = "checkpoint.json"
WEIGHTS = "model.safetensors"
OPTIM = "optimizer.safetensors"
TRAINING_WEIGHTS = "training-weights.safetensors"
META_FIELDS = ("format", "version", "step", "model_config", "run_config", "tokenizer", "dataset", "metrics",
               "optimizer", "files")
EXTRA_FIELDS = ("parameters", "data_position", "ray", "exported_from", "weights_dtype")
"""Optional top-level fields of checkpoint.json; any other field is refused when reading."""




def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> str:
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    atomic_write(path, data)
    return hashlib.sha256(data).hexdigest()


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """AdamW state as flat named tensors plus JSON-able hyper-parameters."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            tensors[f"{key}.{idx}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        key, idx = name.rsplit(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(folder: Path, model: MultiPolicyModel, tokenizer: Tokenizer, *, run_config: dict,
                    step: int, dataset: dict | None = None, metrics: dict | None = None,
                    optimizer: torch.optim.Optimizer | None = None, extra: dict | None = None,
                    average: WeightAverage | None = None) -> Path:
    """Write a checkpoint folder atomically enough: weights first, the JSON that names them last.
    With ``average`` the checkpoint's model is the averaged weights and ``model``'s own are kept
    as training state beside the optimizer's."""
    unknown = sorted(set(extra or {}) - set(EXTRA_FIELDS))
    if unknown:
        raise ValueError(f"save_checkpoint: unknown extra field(s) {unknown}; allowed: {', '.join(EXTRA_FIELDS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    own = model.state_dict()
    files = {WEIGHTS: _save_tensors(own if average is None else {**own, **average.shadow}, folder / WEIGHTS)}
    if average is not None:
        files[TRAINING_WEIGHTS] = _save_tensors(own, folder / TRAINING_WEIGHTS)
    optim_meta = None
    if optimizer is not None:
        tensors, optim_meta = optimizer_tensors(optimizer)
        files[OPTIM] = _save_tensors(tensors, folder / OPTIM)
    meta = {
        "format": FORMAT, "version": VERSION, "step": step,
        "model_config": model.config.to_json(), "run_config": run_config,
        "tokenizer": tokenizer.to_json(), "dataset": dataset or {}, "metrics": metrics or {},
        "optimizer": optim_meta, "files": files, **(extra or {}),
    }
    atomic_write(folder / META, json.dumps(meta, indent=1).encode())
    return folder


def resolve_checkpoint(path) -> Path:
    """A checkpoint folder from a checkpoint folder, a run folder, or a checkpoint.json path."""
    path = Path(path)
    if path.is_file() and path.name == META:
        path = path.parent
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; pass a checkpoint folder or a training run folder")
    if (path / META).exists():
        return path
    latest = path / "latest.json"
    if latest.exists():
        try:
            rel = json.loads(latest.read_text())["checkpoint"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, IndexError):
            rel = None
        if not isinstance(rel, str) or not rel or "\0" in rel:
            raise CheckpointError(f"{latest} is not valid; delete it to fall back to the newest checkpoint")
        target = (path / rel).resolve()
        if path.resolve() not in target.parents:
            raise CheckpointError(f"{latest} points outside {path}; refusing to follow it")
        if not (target / META).is_file():
            raise CheckpointError(f"{latest} names {rel!r}, which holds no {META}; delete {latest.name} to fall "
                                  "back to the newest checkpoint")
        return target
    found = sorted((path / "checkpoints").glob("step-*/" + META)) if (path / "checkpoints").is_dir() else []
    if found:
        return found[-1].parent
    raise CheckpointError(f"{path} holds no {META} and no checkpoints/; pass a checkpoint or run folder")


RAY_STORAGE = ("ray", "ray_train")
"""Where ``train --ray`` lets Ray Train persist its checkpoints inside a run folder."""


def is_complete(folder: Path) -> bool:
    """A readable checkpoint.json whose every listed file is present with its checksum."""
    try:
        meta = read_meta(folder)
    except CheckpointError:
        return False
    return all((Path(folder) / name).is_file() and sha256_file(Path(folder) / name) == digest
               for name, digest in meta["files"].items())


def ray_checkpoints(run) -> list[Path]:
    """Complete checkpoints that Ray Train persisted under ``RUN/ray/`` (a killed Ray run has only these)."""
    storage = Path(run).joinpath(*RAY_STORAGE)
    found = sorted(storage.glob("checkpoint_*/" + META)) if storage.is_dir() else []
    return [f.parent for f in found if is_complete(f.parent)]


def newest_checkpoint(run) -> Path | None:
    """The checkpoint a resumed run starts from (None if the run has none): the one ``latest.json``
    names (checked as by ``resolve_checkpoint``) or a complete one Ray Train persisted, whichever
    has the larger step."""
    run = Path(run)
    candidates = ray_checkpoints(run)
    if (run / "latest.json").exists() or (run / "checkpoints").is_dir():
        candidates.append(resolve_checkpoint(run))
    return max(candidates, key=lambda c: read_meta(c)["step"]) if candidates else None


DIGEST = Kind("64 hex digits", lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None)
OPTIONAL_FIELDS = {  # field -> its kind; absent is fine
    "run_config": OBJECT, "dataset": OBJECT, "metrics": OBJECT, "optimizer": OBJECT | NULL,
    "parameters": COUNT, "data_position": OBJECT, "ray": OBJECT, "exported_from": TEXT,
    "weights_dtype": Kind('"float16"', lambda v: v == "float16"),  # ``export --half``
}
DATASET_FIELDS = {"path": TEXT, "manifest_sha256": TEXT, "population": TEXT, "episodes": COUNT}


def read_meta(folder: Path) -> dict:
    """checkpoint.json of ``folder``, every field checked for type and range (``mirrorhall.validate``):
    what it returns is safe to use, so no reader re-checks it."""
    path = Path(folder) / META
    src = Source(path, CheckpointError, "the checkpoint is damaged or not from this mirrorhall; use another")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} cannot be read as JSON ({type(err).__name__}); the checkpoint is damaged") from None
    try:
        meta = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path} cannot be read as JSON ({type(err).__name__}); the checkpoint is damaged") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a mirrorhall checkpoint")
    version = meta.get("version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise CheckpointError(f"{path} has checkpoint version {short(version)}; this mirrorhall reads "
                              f"{' and '.join(map(str, READABLE_VERSIONS))}")
    for key in ("model_config", "tokenizer", "files", "step"):
        if key not in meta:
            raise CheckpointError(f"{path} lacks {key!r}; the checkpoint is damaged or from another tool")
    unknown = sorted(set(meta) - set(META_FIELDS) - set(EXTRA_FIELDS))
    if unknown:
        raise CheckpointError(f"{path} has unknown field(s) {unknown}; it was not written by this mirrorhall")
    step, files = meta["step"], meta["files"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: 'step' must be a non-negative integer, got {short(step)}")
    if (not isinstance(files, dict) or WEIGHTS not in files or not set(files) <= {WEIGHTS, OPTIM, TRAINING_WEIGHTS}
            or not all(DIGEST(v) for v in files.values())):
        raise CheckpointError(f"{path}: 'files' must map {WEIGHTS} (and {OPTIM}, {TRAINING_WEIGHTS}) to sha256 "
                              "digests; the checkpoint is damaged")
    for key in ("model_config", "tokenizer"):
        if not isinstance(meta[key], dict):
            raise CheckpointError(f"{path}: {key!r} must be a JSON object; the checkpoint is damaged")
    for key, kind in OPTIONAL_FIELDS.items():
        src.field(meta, key, kind, default=None)
    for key, kind in DATASET_FIELDS.items():
        src.field(meta.get("dataset") or {}, key, kind, default=None, where="dataset ")
    population = (meta.get("dataset") or {}).get("population")
    if population is not None and not is_population(population):  # probe and demo draw scenes from it
        src.fail(f"dataset 'population' must be one of {', '.join(POPULATIONS)} or lab+<family>+..., "
                 f"got {short(population)}")
    if meta.get("data_position") is not None:
        src.field(meta["data_position"], "step", COUNT, default=None, where="data_position ")
    if meta.get("optimizer") is not None:
        src.field(meta["optimizer"], "param_groups", list_of(OBJECT), where="optimizer ")
    if isinstance(meta["tokenizer"].get("vocab"), list):  # its shape is Tokenizer.from_json's to check
        src.check(meta["tokenizer"]["vocab"], list_of(TEXT), "tokenizer 'vocab'")
    return meta


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _load_tensors(folder: Path, name: str, meta: dict) -> dict[str, torch.Tensor]:
    path = Path(folder) / name
    if not path.exists():
        raise CheckpointError(f"{path} is missing")
    if sha256_file(path) != meta["files"].get(name):
        raise CheckpointError(f"{path} is truncated or corrupted (checksum mismatch); use another checkpoint")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file ({str(err).splitlines()[0]})") from None
    src = Source(path, CheckpointError, "use another checkpoint")
    for key, value in tensors.items():  # torch's test: numpy has no bfloat16
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            src.fail(f"tensor {key!r} holds {bad} non-finite value(s) (NaN or infinity)")
    return tensors


def _check_shapes(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """A one-line account of what in ``state`` does not match ``model`` (which may be on the meta device)."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"missing {k}" for k in want if k not in have]
    problems += [f"unexpected {k}" for k in have if k not in want]
    problems += [f"{k} has shape {have[k]}, the model expects {want[k]}"
                 for k in want if k in have and have[k] != want[k]]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(f"{path} does not match the model config: {'; '.join(problems[:3])}{more}")


def _load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """load_state_dict with a one-line account of what does not match."""
    _check_shapes(model, state, path)
    model.load_state_dict(state, strict=True)


def read_model_config(folder: Path, meta: dict) -> tuple[ModelConfig, Tokenizer]:
    """The model config and tokenizer of a checkpoint's metadata, checked (types, ranges, sizes)."""
    try:
        config = ModelConfig.from_json(meta["model_config"])
        tokenizer = Tokenizer.from_json(meta["tokenizer"])
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{Path(folder) / META}: {err}") from None
    if len(tokenizer) != config.vocab_size:
        raise CheckpointError(f"{Path(folder) / META}: tokenizer has {len(tokenizer)} words, model expects "
                              f"{config.vocab_size}")
    if tokenizer.buckets != config.ngram_buckets:
        raise CheckpointError(f"{Path(folder) / META}: tokenizer has {tokenizer.buckets} n-gram buckets, model "
                              f"expects {config.ngram_buckets}")
    return config, tokenizer


def load_model(path) -> tuple[MultiPolicyModel, Tokenizer, dict]:
    """(model in eval mode, tokenizer, metadata) from a checkpoint or run folder."""
    folder = resolve_checkpoint(path)
    meta = read_meta(folder)
    config, tokenizer = read_model_config(folder, meta)
    state = _load_tensors(folder, WEIGHTS, meta)
    with torch.device("meta"):  # shapes first, allocating nothing: a config can name any size
        _check_shapes(MultiPolicyModel(config), state, folder / WEIGHTS)
    model = MultiPolicyModel(config)
    _load_weights(model, state, folder / WEIGHTS)
    model.eval()
    return model, tokenizer, meta


def load_training_state(folder: Path, model: MultiPolicyModel, optimizer: torch.optim.Optimizer,
                        average: WeightAverage | None = None) -> dict:
    """Restore model and optimizer (and ``average``) from a training checkpoint; returns its
    metadata. A run that averages from a checkpoint without an average starts it there."""
    meta = read_meta(folder)
    read_model_config(folder, meta)  # the checkpoint a resumed run continues must load elsewhere too
    weights = _load_tensors(folder, WEIGHTS, meta)
    _load_weights(model, weights, Path(folder) / WEIGHTS)
    if average is not None:
        average.load(weights)
    if TRAINING_WEIGHTS in meta["files"]:  # the model's weights were the average: train on from these
        _load_weights(model, _load_tensors(folder, TRAINING_WEIGHTS, meta), Path(folder) / TRAINING_WEIGHTS)
    if meta.get("optimizer") is None:
        raise CheckpointError(f"{folder} has no optimizer state; it cannot be resumed")
    tensors = _load_tensors(folder, OPTIM, meta)
    _check_param_groups(Path(folder) / META, meta["optimizer"]["param_groups"], optimizer)
    try:
        load_optimizer(optimizer, tensors, meta["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{Path(folder) / OPTIM} does not match this run's optimizer "
                              f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    return meta


def _check_param_groups(path: Path, groups: list, optimizer: torch.optim.Optimizer) -> None:
    """The stored hyper-parameter groups have this run's optimizer's groups, fields and value kinds
    (numbers finite and non-negative): torch reads them only when it takes a step."""
    src = Source(path, CheckpointError, "this checkpoint cannot be resumed; start a new run")
    live = optimizer.state_dict()["param_groups"]
    if len(groups) != len(live):
        src.fail(f"optimizer 'param_groups' holds {len(groups)} groups, this run's optimizer {len(live)}")
    for i, (group, want) in enumerate(zip(groups, live, strict=True)):
        if set(group) != set(want):
            src.fail(f"optimizer param_groups item {i} has the fields {sorted(group)[:12]}, this run's optimizer "
                     f"{sorted(want)}")
        for key, value in want.items():
            name = f"optimizer param_groups item {i} {key!r}"
            if key == "params":
                if group[key] != value:
                    src.fail(f"{name} must be {short(value)}, got {short(group[key])}")
            elif isinstance(value, bool) or value is None:
                src.check(group[key], BOOL | NULL, name)
            elif isinstance(value, (tuple, list)):
                src.check(group[key], list_of(NONNEGATIVE, len(value)), name)
            else:
                src.check(group[key], NONNEGATIVE, name)


def load_policy(path, core, agents):
    """A ``ModelPolicy`` driving ``agents`` of worlds ``core`` with the checkpoint at ``path``."""
    from mirrorhall.imitation.policy import ModelPolicy

    model, tokenizer, _ = load_model(path)
    return ModelPolicy(model, tokenizer, core, agents)


def export_checkpoint(path, out, half: bool = False) -> Path:
    """Copy a checkpoint's weights and metadata, without optimizer state, to the folder ``out``.

    The checkpoint is loaded into its model first (a checkpoint whose weights do not match its
    config is refused before anything is written), and the copy is loaded back before returning;
    if anything fails, ``out`` is left as it was (a folder created for it is removed). ``half``
    stores the floating-point weights as float16 (half the bytes; a model loads them back into
    float32, so its figures can differ from the original's in the third or fourth decimal).
    """
    folder = resolve_checkpoint(path)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out} is not empty; choose an empty or new folder")
    _, _, meta = load_model(folder)
    weights = _load_tensors(folder, WEIGHTS, meta)
    if half:
        big = [k for k, v in weights.items() if v.is_floating_point() and v.abs().max() > 6e4]
        if big:
            raise CheckpointError(f"{folder}: weight {big[0]!r} exceeds float16's range; export it without --half")
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    with undo_on_failure(out):
        out.mkdir(parents=True, exist_ok=True)
        files = {WEIGHTS: _save_tensors(weights, out / WEIGHTS)}
        slim = {**meta, "optimizer": None, "files": files, "exported_from": str(folder),
                **({"weights_dtype": "float16"} if half else {})}
        atomic_write(out / META, json.dumps(slim, indent=1).encode())
        load_model(out)
    return out
