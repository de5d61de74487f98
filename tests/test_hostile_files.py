"""Corrupt and hostile files: every bad file is refused with one line naming it (CLI: exit 2).

Extends tests/test_dataset.py (truncated and bit-flipped shards, unknown schema version, a killed
`generate`) and tests/test_training.py (config mismatch, a crafted pickle, truncated weights):
manifests and checkpoint.json files with unexpected or ill-typed fields, bit-flipped weights,
a checkpoint of another model size, `latest.json` and manifests that point outside their folder,
symlinks, outputs that could escape the chosen folder, and a static check that nothing in the
package can execute code while loading. The tiny dataset and run come from tests/conftest.py
(``tiny_dataset``: traits, 4 episodes of 6 steps, 3 agents, seed 9; ``tiny_run``: tiny model, 4
steps, a checkpoint every 2); each test edits its own copy.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import pytest

from mirrorhall.cli import main
from mirrorhall.errors import DatasetError
from mirrorhall.imitation.shards import Dataset, shard_name

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tiny_dataset, tmp_path) -> Path:
    shutil.copytree(tiny_dataset, tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    shutil.copytree(tiny_run, tmp_path / "run")
    return tmp_path / "run"


def refused(capsys, argv: list[str], *needles: str) -> str:
    """``mirrorhall ARGV`` exits 2 with exactly one line ``mirrorhall: error: ...`` holding ``needles``."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("mirrorhall: error: "), lines
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def train_argv(data: Path, run: Path, *extra) -> list[str]:
    return ["train", "--data", str(data), "--out", str(run), "--size", "tiny", "--threads", "1", "--steps", "6",
            "--checkpoint-every", "2", "--eval-every", "2", "--no-progress", *map(str, extra)]


def act_argv(checkpoint: Path) -> list[str]:
    return ["act", "--checkpoint", str(checkpoint), "--agents", "3", "--steps", "2", "--no-progress",
            "--prompt", "agent_0=behave as yourself"]


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# --- dataset manifests -----------------------------------------------------------------------------


def _set(key, value):
    return lambda m: m.__setitem__(key, value)


MANIFEST_EDITS = {
    "unexpected top-level field": (_set("written_by", "someone else"), "unknown field(s) ['written_by']"),
    "missing field": (lambda m: m.pop("n_shards"), "lacks the field 'n_shards'"),
    "shards is a list": (_set("shards", ["shard-00000.parquet"]), "must be JSON objects"),
    "config is a string": (_set("config", "crowd"), "must be JSON objects"),
    "negative sample count": (_set("samples", -5), "'samples' must be a non-negative integer"),
    "shard entry lacks bytes": (lambda m: m["shards"]["shard-00000.parquet"].pop("bytes"), "the entry of shard-00000"),
    "shard entry with extra field": (lambda m: m["shards"]["shard-00000.parquet"].update(exec="x"), "the entry of"),
    "sha256 not hex": (lambda m: m["shards"]["shard-00000.parquet"].update(sha256="../" * 21 + "x"), "the entry of"),
    "unknown generator config field": (lambda m: m["config"].update(payload="rm -rf"), "bad generator config"),
    "bad generator config value": (lambda m: m["config"].update(agents=-1), "agents must be a positive integer"),
    "shard index beyond n_shards": (lambda m: m["shards"].update({"shard-00099.parquet": m["shards"]["shard-00000.parquet"]}),
                                    "shard-00099.parquet"),
}


@pytest.mark.parametrize("case", list(MANIFEST_EDITS))
def test_bad_manifest_is_refused_in_one_line_naming_it(case, data, tmp_path, capsys):
    change, message = MANIFEST_EDITS[case]
    edit_json(data / "manifest.json", change)
    refused(capsys, train_argv(data, tmp_path / "run"), data / "manifest.json", message)
    # generate (a resume of the same dataset) refuses it too, and rewrites nothing
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    refused(capsys, ["generate", "--population", "traits", "--episodes", 4, "--episodes-per-shard", 2,
                     "--agents", 3, "--steps", 6, "--seed", 9, "--out", data, "--no-progress"],
            data / "manifest.json")
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    assert not (tmp_path / "run").exists(), "a refused run writes nothing"


@pytest.mark.parametrize("content", [b"", b"{\"format\": \"mirrorhall-data", b"\xff\xfe\x00garbage", b"[1, 2]", b"null"])
def test_unreadable_manifest_is_refused(content, data, tmp_path, capsys):
    (data / "manifest.json").write_bytes(content)
    refused(capsys, train_argv(data, tmp_path / "run"), data / "manifest.json")


def test_manifest_that_is_a_folder_is_refused(data, tmp_path, capsys):
    (data / "manifest.json").unlink()
    (data / "manifest.json").mkdir()
    refused(capsys, train_argv(data, tmp_path / "run"), data / "manifest.json")


@pytest.mark.parametrize("name", ["../evil.parquet", "/etc/passwd", "shard-00000.parquet/../../evil.parquet",
                                  "sub/shard-00000.parquet", "shard-0.parquet", "SHARD-00000.parquet",
                                  "shard-00000.parquet\x00"])
def test_manifest_naming_a_file_outside_the_folder_is_refused_not_read(name, data, tmp_path, capsys):
    """Shard names come only from the manifest; only shard-NNNNN.parquet (NNNNN < n_shards) is used."""
    evil = tmp_path / "evil.parquet"  # a valid shard, outside the dataset folder, with its checksum
    shutil.copy(data / shard_name(0), evil)
    before = evil.read_bytes()
    entry = {"sha256": hashlib.sha256(before).hexdigest(), "bytes": len(before), "samples": 1}
    edit_json(data / "manifest.json", lambda m: m["shards"].update({name: entry}))
    with pytest.raises(DatasetError, match=r"lists a shard named .*refusing to use it"):
        Dataset(data)
    refused(capsys, train_argv(data, tmp_path / "run"), data / "manifest.json", "refusing to use it")
    refused(capsys, ["generate", "--population", "traits", "--episodes", 4, "--episodes-per-shard", 2, "--agents", 3,
                     "--steps", 6, "--seed", 9, "--out", data, "--no-progress"], "refusing to use it")
    assert evil.read_bytes() == before


def test_shard_with_valid_checksum_but_undecodable_rows_is_named(data, tmp_path, capsys):
    import pyarrow.parquet as pq

    path = data / shard_name(1)
    table = pq.read_table(path)
    personas = table.column("personas").to_pylist()
    table = table.set_column(table.schema.get_field_index("personas"), "personas",
                             __import__("pyarrow").array(["[{\"kind\": \"wizard\"}]"] + personas[1:]))
    pq.write_table(table, path)
    raw = path.read_bytes()
    edit_json(data / "manifest.json", lambda m: m["shards"][shard_name(1)].update(
        sha256=hashlib.sha256(raw).hexdigest(), bytes=len(raw)))
    refused(capsys, train_argv(data, tmp_path / "run"), path, "cannot be decoded", "wizard")


def test_generate_replaces_a_symlinked_shard_and_never_writes_through_it(tiny_dataset, tmp_path, capsys):
    """Outputs stay in --out: a shard path that is a symlink to a file elsewhere is replaced, not
    written through, and nothing is created outside the chosen folder."""
    out = tmp_path / "box" / "data"
    shutil.copytree(tiny_dataset, out)
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    edit_json(out / "manifest.json", lambda m: m["shards"].pop(shard_name(1)))
    (out / shard_name(1)).unlink()
    (out / shard_name(1)).symlink_to(outside)
    capsys.readouterr()
    assert main(["generate", "--population", "traits", "--episodes", "4", "--episodes-per-shard", "2", "--agents",
                 "3", "--steps", "6", "--seed", "9", "--out", str(out), "--no-progress"]) == 0
    assert outside.read_text() == "keep me"
    assert not (out / shard_name(1)).is_symlink()
    assert Dataset(out).manifest == Dataset(tiny_dataset).manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box", "precious.txt"]
    assert [p.name for p in (tmp_path / "box").iterdir()] == ["data"]


def test_training_writes_only_inside_its_run_folder(tiny_dataset, tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    assert main(train_argv(tiny_dataset, box / "run")) == 0
    assert [p.name for p in box.iterdir()] == ["run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box"]
    written = {p.relative_to(box / "run").parts[0] for p in (box / "run").rglob("*")}
    assert written == {"checkpoints", "latest.json", "metrics.jsonl", "tb"} or written == {
        "checkpoints", "latest.json", "metrics.jsonl"}


# --- checkpoints --------------------------------------------------------------------------------------


def checkpoint_dir(run: Path) -> Path:
    return run / json.loads((run / "latest.json").read_text())["checkpoint"]


CHECKPOINT_EDITS = {
    "unexpected top-level field": (lambda m: m.update(loader="os.system"), "unknown field(s) ['loader']"),
    "wrong format": (lambda m: m.update(format="pytorch"), "is not a mirrorhall checkpoint"),
    "future version": (lambda m: m.update(version=2), "checkpoint version 2"),
    "missing files": (lambda m: m.pop("files"), "lacks 'files'"),
    "files is a list": (lambda m: m.update(files=["model.safetensors"]), "'files' must map"),
    "negative step": (lambda m: m.update(step=-1), "'step' must be a non-negative integer"),
    "step is a string": (lambda m: m.update(step="10"), "'step' must be"),
    "model config is a list": (lambda m: m.update(model_config=[1, 2]), "'model_config' must be a JSON object"),
    "model config of another size": (lambda m: m["model_config"].update(d_model=64, d_evidence=64, n_heads=4,
                                                                         n_layers=2, d_head_mlp=64),
                                     "does not match the model config"),
    "unknown model config field": (lambda m: m["model_config"].update(activation="eval"), "activation"),
    "tokenizer with duplicates": (lambda m: m["tokenizer"].update(vocab=["<pad>", "<unk>", "a", "a"]), "tokenizer"),
    "checksum of other bytes": (lambda m: m["files"].update({"model.safetensors": "0" * 64}), "checksum mismatch"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_EDITS))
def test_bad_checkpoint_json_is_refused_in_one_line_naming_it(case, run, capsys):
    change, message = CHECKPOINT_EDITS[case]
    folder = checkpoint_dir(run)
    edit_json(folder / "checkpoint.json", change)
    refused(capsys, act_argv(run), folder, message)


@pytest.mark.parametrize("content", [b"", b"{\"format\": \"mirrorhall-checkpoint\"", b"\xff\xfe\x00", b"[]"])
def test_unreadable_checkpoint_json_is_refused(content, run, capsys):
    folder = checkpoint_dir(run)
    (folder / "checkpoint.json").write_bytes(content)
    refused(capsys, act_argv(folder), folder / "checkpoint.json")


def test_huge_model_config_is_refused_without_allocating_it(run, capsys):
    """A config naming a model of 10^11 parameters (with the tiny weights) is refused by comparing
    shapes on the meta device: nothing is allocated, so no out-of-memory and no long stall."""
    folder = checkpoint_dir(run)
    edit_json(folder / "checkpoint.json",
              lambda m: m["model_config"].update(d_model=2**16, d_evidence=2**16, n_heads=2, n_layers=8))
    t0 = time.perf_counter()
    refused(capsys, act_argv(run), folder / "model.safetensors", "does not match the model config")
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
@pytest.mark.parametrize("where", [0.1, 0.5, 0.99])
def test_bit_flipped_weights_are_refused(name, where, tiny_dataset, run, tmp_path, capsys):
    folder = checkpoint_dir(run)
    raw = bytearray((folder / name).read_bytes())
    raw[int(len(raw) * where)] ^= 0x04
    (folder / name).write_bytes(bytes(raw))
    if name == "model.safetensors":
        refused(capsys, act_argv(run), folder / name, "truncated or corrupted (checksum mismatch)")
    refused(capsys, train_argv(tiny_dataset, run, "--resume"), folder / name, "checksum mismatch")


def test_resuming_a_tiny_run_as_small_is_refused(tiny_dataset, run, capsys):
    refused(capsys, [*train_argv(tiny_dataset, run, "--resume"), "--size", "small"],
            checkpoint_dir(run), "size was 'tiny' in this run, now 'small'")
    refused(capsys, [*train_argv(tiny_dataset, run, "--resume"), "--seed", "3"], "seed was 0 in this run, now 3")


@pytest.mark.parametrize("target", ["../../etc", "/etc", "..", ".", "../run-elsewhere/checkpoints/step-00000004",
                                    "checkpoints/../../x"])
def test_latest_json_pointing_outside_the_run_is_refused(target, run, tiny_run, tiny_dataset, capsys):
    shutil.copytree(tiny_run, run.parent / "run-elsewhere")  # a valid checkpoint, but not this run's
    (run / "latest.json").write_text(json.dumps({"checkpoint": target}))
    refused(capsys, act_argv(run), run / "latest.json")
    refused(capsys, train_argv(tiny_dataset, run, "--resume"), run / "latest.json")


def test_symlinked_checkpoint_leading_outside_the_run_is_refused(run, capsys):
    elsewhere = run.parent / "elsewhere"
    shutil.copytree(checkpoint_dir(run), elsewhere)
    (run / "checkpoints" / "step-00000099").symlink_to(elsewhere, target_is_directory=True)
    (run / "latest.json").write_text(json.dumps({"checkpoint": "checkpoints/step-00000099"}))
    refused(capsys, act_argv(run), run / "latest.json", "points outside")


@pytest.mark.parametrize("content", ['{"checkpoint": 5}', '{"checkpoint": null}', '{"checkpoint": ""}', "[]",
                                    '{"checkpoint": ["a"]}', '{"checkpoint": "a\\u0000b"}', "not json", "",
                                    '{"checkpoint": "checkpoints/step-00000077"}'])
def test_malformed_latest_json_is_refused(content, run, tiny_dataset, capsys):
    (run / "latest.json").write_text(content)
    refused(capsys, act_argv(run), run / "latest.json")
    refused(capsys, train_argv(tiny_dataset, run, "--resume"), run / "latest.json")


def test_export_copies_no_unknown_fields_and_its_output_loads(run, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "export")]) == 0
    meta = json.loads((tmp_path / "export" / "checkpoint.json").read_text())
    assert meta["optimizer"] is None and "exported_from" in meta
    capsys.readouterr()
    assert main(act_argv(tmp_path / "export")) == 0


def test_reference_checkpoint_still_loads():
    from mirrorhall.imitation.checkpoint import load_model

    ref = ROOT / "checkpoints" / "reference"
    if not (ref / "checkpoint.json").exists():
        pytest.skip("no reference checkpoint in this checkout")
    model, tok, meta = load_model(ref)
    assert meta["step"] > 0 and len(tok) == model.config.vocab_size


# --- loading never executes code ------------------------------------------------------------------------

PACKAGES = ("envs", "agents", "imitation", "analysis", "mirrorhall")
# call targets that can run code or unpickle while loading
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "pickle.load", "pickle.loads", "torch.load",
                   "marshal.load", "marshal.loads", "dill.load", "dill.loads", "cloudpickle.load",
                   "cloudpickle.loads", "joblib.load", "shelve.open", "yaml.load", "yaml.unsafe_load",
                   "pd.read_pickle", "pandas.read_pickle", "np.load", "numpy.load", "torch.jit.load",
                   "runpy.run_path", "runpy.run_module", "importlib.import_module"}
FORBIDDEN_IMPORTS = {"pickle", "marshal", "dill", "cloudpickle", "shelve", "joblib", "runpy"}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return "?"


def sources() -> list[Path]:
    found = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(found) > 30, "the source folders were not found"
    return found


def test_no_module_can_execute_code_while_loading():
    """Static check over every source file: no eval/exec, no unpickling loaders, no pickle import.
    (Attribute calls such as ``model.eval()`` are not the builtin and are not flagged.)"""
    problems = []
    for path in sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and dotted(node.func) in FORBIDDEN_CALLS:
                problems.append(f"{where} calls {dotted(node.func)}")
            elif isinstance(node, ast.Import):
                problems += [f"{where} imports {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_IMPORTS]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_IMPORTS:
                problems.append(f"{where} imports from {node.module}")
    assert not problems, problems


def test_grep_finds_no_unpickling_or_eval_in_the_sources():
    """The same, as plain text, so that aliasing tricks (``from torch import load``) show too."""
    pattern = re.compile(r"pickle\.loads?\(|torch\.load\(|(?<![\w.])eval\(|(?<![\w.])exec\(|"
                         r"from torch import [^\n]*\bload\b|allow_pickle\s*=\s*True|weights_only\s*=\s*False")
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in sources()
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits
