"""Outputs are checked before the work, and a refused or failed command leaves nothing behind.

Every command checks, before it starts, that it can write what it writes: the folder exists or
can be created under an existing parent, it is a folder (or a file) as expected, and it is not a
folder of another kind. Each refusal is one line ``mirrorhall: error: ...`` naming the user's
path, exit 2, and the tree around it is byte-identical before and after. A command that fails
midway removes what it added (a run keeps its checkpoints, a dataset its shards, so a re-run
resumes). Outputs follow the user's umask.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from mirrorhall.cli import main
from mirrorhall.files import atomic_write, undo_on_failure
from mirrorhall.imitation.generate import GenerateConfig, generate
from mirrorhall.imitation.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "checkpoints" / "reference"
DATA = dict(population="traits", episodes=4, episodes_per_shard=2, agents=3, steps=6, seed=9)
PROMPT = ("--prompt", "agent_0=behave as yourself")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A tiny dataset and a tiny run trained on it (tiny model, 2 steps)."""
    root = tmp_path_factory.mktemp("outputs")
    generate(GenerateConfig(**DATA), root / "data")
    train(TrainConfig(data=str(root / "data"), out=str(root / "run"), steps=2, size="tiny", eval_every=2,
                      checkpoint_every=2, threads=1), progress=False)
    return root


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def cli(argv: list) -> int:
    return main([str(a) for a in argv])


def refused(capsys, argv: list, *needles) -> str:
    """``mirrorhall ARGV`` exits 2 with exactly one line ``mirrorhall: error: ...`` holding ``needles``
    (one-line warnings about the input, such as a dataset too small for held-out evaluation, may
    come before it)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    warned = [line for line in lines[:-1] if line.startswith("mirrorhall: warning: ")]
    lines = lines[len(warned):]
    assert len(lines) == 1 and lines[0].startswith("mirrorhall: error: "), lines
    assert ".tmp" not in lines[0], lines[0]
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def refused_quietly(capsys, where: Path, argv: list, *needles, seconds: float = 20) -> str:
    """``refused``, quickly (before any simulation or training), and nothing changes under ``where``."""
    before = tree(where)
    t0 = time.perf_counter()
    line = refused(capsys, argv, *needles)
    assert time.perf_counter() - t0 < seconds, "the output was checked only after the work"
    assert tree(where) == before, "a refused command wrote something"
    return line


def train_argv(data, out, *extra) -> list:
    return ["train", "--data", data, "--out", out, "--size", "tiny", "--threads", "1", "--steps", "2",
            "--checkpoint-every", "2", "--eval-every", "2", "--no-progress", *extra]


def generate_argv(out) -> list:
    return ["generate", "--population", "traits", "--episodes", 4, "--episodes-per-shard", 2, "--agents", 3,
            "--steps", 6, "--seed", 9, "--out", out, "--no-progress"]


# --- train --out at a folder of another kind ------------------------------------------------------


def test_train_refuses_an_out_that_is_a_dataset_or_holds_unrelated_files(files, tmp_path, capsys):
    data = files / "data"
    refused_quietly(capsys, files, train_argv(data, data), f"--out {data}", "a mirrorhall dataset")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine\n")
    refused_quietly(capsys, tmp_path, train_argv(data, notes), f"--out {notes}", "not empty")
    refused_quietly(capsys, tmp_path, train_argv(data, notes / "todo.txt"), "is a file, not a folder")
    # as generate refuses the same folders
    refused_quietly(capsys, tmp_path, generate_argv(notes), str(notes), "not empty")


def test_train_accepts_an_empty_folder_and_its_own_run(files, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(train_argv(files / "data", empty)) == 0
    assert (empty / "latest.json").is_file()
    # its own run: the resume decision stays with train
    refused(capsys, train_argv(files / "data", empty), "already holds a training run", "--resume")


@pytest.mark.parametrize("command", ["train", "generate", "probe", "export", "compare-direct", "demo"])
def test_an_out_under_a_missing_parent_is_refused_and_nothing_is_created(command, files, tmp_path, capsys):
    out = tmp_path / "missing" / "deeper" / "out"
    argv = {
        "train": train_argv(files / "data", out),
        "generate": generate_argv(out),
        "probe": ["probe", "calibration", "--checkpoint", REFERENCE, "--out", out],
        "export": ["export", "--checkpoint", files / "run", "--out", out],
        "compare-direct": ["compare-direct", "--checkpoint", REFERENCE, "--out", out],
        "demo": ["demo", "--out", out, "--no-progress"],
    }[command]
    refused_quietly(capsys, tmp_path, argv, f"--out {out}", f"the folder {tmp_path / 'missing' / 'deeper'} does not exist")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["probe", "compare-direct", "demo"])
@pytest.mark.parametrize("kind", ["dataset", "checkpoint", "file"])
def test_result_folders_of_another_kind_are_refused_before_the_work(command, kind, files, capsys):
    out = {"dataset": files / "data", "checkpoint": files / "run" / "checkpoints" / "step-00000002",
           "file": files / "data" / "manifest.json"}[kind]
    argv = {
        "probe": ["probe", "calibration", "--checkpoint", REFERENCE, "--out", out],
        "compare-direct": ["compare-direct", "--checkpoint", REFERENCE, "--out", out],
        "demo": ["demo", "--out", out, "--no-progress"],
    }[command]
    expect = {"dataset": "a mirrorhall dataset", "checkpoint": "a checkpoint", "file": "is a file, not a folder"}[kind]
    refused_quietly(capsys, files, argv, f"--out {out}", expect)
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "Ray was started before the output was checked"


# --- export --------------------------------------------------------------------------------------------


def test_export_of_weights_that_do_not_match_their_config_is_refused_and_writes_nothing(files, tmp_path, capsys):
    import shutil

    source = tmp_path / "ckpt"
    shutil.copytree(files / "run" / "checkpoints" / "step-00000002", source)
    meta = json.loads((source / "checkpoint.json").read_text())
    meta["model_config"].update(d_model=64, d_evidence=64, n_heads=4, n_layers=2, d_head_mlp=64)
    (source / "checkpoint.json").write_text(json.dumps(meta))  # the weights' checksum still matches
    refused_quietly(capsys, tmp_path, ["export", "--checkpoint", source, "--out", tmp_path / "shared"],
                    "does not match the model config")
    assert not (tmp_path / "shared").exists()


def test_a_failed_export_leaves_no_folder_and_an_empty_one_empty(files, tmp_path, capsys):
    import shutil

    source = tmp_path / "ckpt"
    shutil.copytree(files / "run" / "checkpoints" / "step-00000002", source)
    weights = source / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    refused_quietly(capsys, tmp_path, ["export", "--checkpoint", source, "--out", tmp_path / "new"], "checksum")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    refused(capsys, ["export", "--checkpoint", source, "--out", tmp_path / "empty"], "checksum")
    assert list((tmp_path / "empty").iterdir()) == []
    # a folder that is not empty is refused before the checkpoint is read
    (tmp_path / "empty" / "x").write_text("x")
    refused_quietly(capsys, tmp_path, ["export", "--checkpoint", files / "run", "--out", tmp_path / "empty"],
                    "is not empty")


def test_export_loads_its_copy_back(files, tmp_path, capsys):
    out = tmp_path / "shared"
    assert cli(["export", "--checkpoint", files / "run", "--out", out]) == 0
    from mirrorhall.imitation.checkpoint import load_model

    load_model(out)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.json", "model.safetensors"]


# --- --render ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "act"])
def test_render_under_a_missing_folder_is_refused_before_the_scene(command, tmp_path, capsys):
    gif = tmp_path / "nonexistent" / "dir" / "x.gif"
    argv = {"run": ["run", "--steps", 100000, "--no-progress", "--render", gif],
            "act": ["act", "--checkpoint", REFERENCE, "--steps", 100000, "--agents", 3, "--no-progress", *PROMPT,
                    "--render", gif]}[command]
    refused_quietly(capsys, tmp_path, argv, f"--render {gif}", "does not exist", seconds=10)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["run", "act"])
def test_render_into_a_file_or_onto_a_folder_is_refused_naming_the_path(command, tmp_path, capsys):
    (tmp_path / "plain").write_text("not a folder")
    (tmp_path / "taken.gif").mkdir()
    base = {"run": ["run", "--steps", 100000, "--no-progress"],
            "act": ["act", "--checkpoint", REFERENCE, "--steps", 100000, "--agents", 3, "--no-progress", *PROMPT]}
    gif = tmp_path / "plain" / "x.gif"
    refused_quietly(capsys, tmp_path, [*base[command], "--render", gif], f"--render {gif}", "is not a folder")
    refused_quietly(capsys, tmp_path, [*base[command], "--render", tmp_path / "taken.gif"], "is a folder")


def test_a_name_too_long_for_any_file_system_is_refused_before_the_work(tmp_path, capsys):
    long = "x" * 300
    refused_quietly(capsys, tmp_path, ["run", "--steps", 100000, "--no-progress", "--render", tmp_path / f"{long}.gif"],
                    "--render holds a name of 304 bytes")
    refused_quietly(capsys, tmp_path, ["probe", "calibration", "--checkpoint", REFERENCE, "--out", tmp_path / long],
                    "--out holds a name of 300 bytes")


def test_act_checks_its_render_before_loading_the_checkpoint(tmp_path, capsys):
    gif = tmp_path / "a" / "b" / "x.gif"
    refused_quietly(capsys, tmp_path, ["act", "--checkpoint", tmp_path / "no-such-run", "--no-progress", *PROMPT,
                                       "--render", gif], f"--render {gif}")


def test_run_creates_only_the_last_folder_of_a_render_path(tmp_path, capsys):
    gif = tmp_path / "new" / "x.gif"
    assert cli(["run", "--steps", 2, "--agents", 3, "--no-progress", "--render", str(gif)]) == 0
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["x.gif"]


def test_report_refuses_a_results_folder_it_cannot_write_into(tmp_path, capsys):
    (tmp_path / "calibration.json").write_text("{}")
    (tmp_path / "report.md").mkdir()
    refused_quietly(capsys, tmp_path, ["report", tmp_path], "report.md", "is a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_before_the_work(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        refused_quietly(capsys, tmp_path, ["run", "--steps", 100000, "--no-progress", "--render", ro / "x.gif"],
                        f"the folder {ro} is not writable")
        refused_quietly(capsys, tmp_path, ["probe", "calibration", "--checkpoint", REFERENCE, "--out", ro / "p"],
                        "is not writable")
    finally:
        ro.chmod(0o755)


# --- failed commands leave nothing behind ------------------------------------------------------------


def test_a_run_that_fails_before_its_first_checkpoint_is_removed(files, tmp_path, monkeypatch, capsys):
    from mirrorhall.errors import DatasetError
    from mirrorhall.imitation import train as train_module

    real = train_module.Trainer.train_step

    def failing(self):
        if self.step == fail_at:
            raise DatasetError("injected failure")
        return real(self)

    monkeypatch.setattr(train_module.Trainer, "train_step", failing)
    fail_at = 1
    refused(capsys, train_argv(files / "data", tmp_path / "run"), "injected failure")
    assert list(tmp_path.iterdir()) == [], "a failed run left a folder behind"
    (tmp_path / "empty").mkdir()
    refused(capsys, train_argv(files / "data", tmp_path / "empty"), "injected failure")
    assert list((tmp_path / "empty").iterdir()) == []
    # after a checkpoint, the run stays: --resume continues it
    fail_at = 3
    refused(capsys, train_argv(files / "data", tmp_path / "run", "--steps", 4), "injected failure")
    assert (tmp_path / "run" / "checkpoints" / "step-00000002" / "checkpoint.json").is_file()
    monkeypatch.setattr(train_module.Trainer, "train_step", real)
    assert cli(train_argv(files / "data", tmp_path / "run", "--steps", 4, "--resume")) == 0


def test_a_probe_that_fails_midway_leaves_nothing(tmp_path, monkeypatch, capsys):
    from mirrorhall.analysis import report

    def failing(name, probe, out, *args, **kwargs):
        (Path(out) / f"{name}.json").write_text("{}")  # a first result, then a failure
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "run_probe", failing)
    assert cli(["probe", "calibration", "--checkpoint", str(REFERENCE), "--out", str(tmp_path / "p")]) == 130
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "probe_config.json").write_text("{}")
    assert cli(["probe", "calibration", "--checkpoint", str(REFERENCE), "--out", str(tmp_path / "old")]) == 130
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["probe_config.json"], "what was there stays"


def test_undo_on_failure_removes_what_was_added_and_keeps_the_rest(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), undo_on_failure(tmp_path / "mine", keep=lambda p: p.name == "keep"):
        (tmp_path / "mine" / "new.txt").write_text("new")
        (tmp_path / "mine" / "sub").mkdir()
        (tmp_path / "mine" / "keep").write_text("progress")
        raise RuntimeError
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["keep", "old.txt"]
    with pytest.raises(RuntimeError), undo_on_failure(tmp_path / "a" / "b" / "c"):
        (tmp_path / "a" / "b" / "c").mkdir(parents=True)
        raise RuntimeError
    assert not (tmp_path / "a").exists()
    with undo_on_failure(tmp_path / "ok"):
        (tmp_path / "ok").mkdir()
    assert (tmp_path / "ok").is_dir()


def test_atomic_write_errors_name_the_path_not_the_temporary_file(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(OSError) as err:
        atomic_write(tmp_path / "plain" / "x.gif", b"gif")
    assert str(tmp_path / "plain" / "x.gif") in str(err.value) and ".tmp" not in str(err.value)
    assert err.value.errno is not None
    assert [p.name for p in tmp_path.iterdir()] == ["plain"]


# --- permissions follow the umask ---------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_follow_the_umask(umask, files, tmp_path, capsys):
    old = os.umask(umask)
    try:
        assert cli(["run", "--steps", 2, "--agents", 3, "--no-progress", "--render", str(tmp_path / "x.gif")]) == 0
        assert cli(["export", "--checkpoint", str(files / "run"), "--out", str(tmp_path / "export")]) == 0
        generate(GenerateConfig(**{**DATA, "episodes": 2}), tmp_path / "data")
        atomic_write(tmp_path / "direct.bin", b"x")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    for path in [tmp_path / "x.gif", tmp_path / "direct.bin", *(tmp_path / "export").iterdir(),
                 *(tmp_path / "data").iterdir()]:
        assert path.stat().st_mode & 0o777 == want, (path, oct(path.stat().st_mode & 0o777), oct(want))
    assert (tmp_path / "export").stat().st_mode & 0o777 == 0o777 & ~umask


def test_only_the_demo_default_may_create_a_missing_parent(tmp_path):
    from mirrorhall.commands.common import check_output_folder
    from mirrorhall.commands.demo import DEFAULT_OUT
    from mirrorhall.errors import OutputError

    assert DEFAULT_OUT == "out/demo"
    assert check_output_folder("--out", str(tmp_path / "out" / "demo"), parents=True) == tmp_path / "out" / "demo"
    with pytest.raises(OutputError, match="does not exist"):
        check_output_folder("--out", str(tmp_path / "out" / "demo"))
    assert list(tmp_path.iterdir()) == [], "a check creates nothing"
