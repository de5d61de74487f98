"""SIGKILL in the middle of `mirrorhall train` (local, and Ray Train's driver), then `--resume`.

Local: the run resumes from its last checkpoint and finishes; nothing is lost or duplicated
(every logged step appears once in metrics.jsonl, the steps re-run after the checkpoint log the
same losses as the killed run did, within 1e-5), and the final weights equal those of an
uninterrupted run (1e-5). Batches are a pure function of (seed, step); --threads 1 makes the
arithmetic deterministic.

Ray: killing the driver's process group takes down every Ray process it started (checked pid by
pid: gcs_server, raylet, workers, agents); the run then resumes locally from the checkpoints Ray
Train persisted, and again on Ray from that local checkpoint, to the right final step.

No orphans: after `kill -9` of the command's pid alone (not its group), no process it started
outlives it by more than 10 s: the spawned workers and resource tracker of `generate --processes 2`
and `train --data-processes 2`, and every Ray process of `train --ray` (its agents lingered for a
minute before the reaper of `mirrorhall/raykit.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from mirrorhall.imitation.checkpoint import load_model, ray_checkpoints, read_meta

MIRRORHALL = str(Path(sys.executable).parent / "mirrorhall")

pytestmark = pytest.mark.slow  # every test here trains in subprocesses


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(run) if r["phase"] == "train"}


def latest_step(run: Path) -> int:
    return read_meta(run / json.loads((run / "latest.json").read_text())["checkpoint"])["step"]


@pytest.fixture(scope="module")
def data(train_dataset) -> str:
    """The shared 16-episode dataset of tests/conftest.py (read only: runs write elsewhere)."""
    return str(train_dataset)


def train_args(data: str, run: Path, *extra: str) -> list[str]:
    return [MIRRORHALL, "train", "--data", data, "--out", str(run), "--size", "tiny", "--threads", "1",
            "--no-progress", *extra]


# --- local -------------------------------------------------------------------------------------------

FINAL = 200  # the kill falls between the step-100 checkpoint and the final one
LOCAL = ("--steps", str(FINAL), "--checkpoint-every", "100", "--eval-every", "50")  # logs every 20 steps


def test_sigkill_during_local_training_then_resume_loses_and_duplicates_nothing(tmp_path, data):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_args(data, killed, *LOCAL), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # kill once a step after the step-100 checkpoint is logged and before the final (step-200) one:
    # the resumed run must re-run (and re-log) the steps in between
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (killed / "latest.json").exists() and latest_step(killed) == 100 and max(logged_steps(killed)) >= 140:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    ckpt = latest_step(killed)
    before = losses(killed)
    rerun = sorted(s for s in before if s > ckpt)
    assert ckpt == 100 and rerun, (ckpt, sorted(before))  # the scenario this test is about
    r = subprocess.run(train_args(data, killed, *LOCAL), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "already holds a training run; pass --resume" in r.stderr

    r = subprocess.run(train_args(data, killed, *LOCAL, "--resume"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith(f"{killed}: step {FINAL}")
    assert latest_step(killed) == FINAL

    # every logged step exactly once, train and eval, nothing missing
    seen = [(rec["phase"], rec["step"]) for rec in records(killed)]
    assert len(seen) == len(set(seen)), "a step is logged twice"
    assert sorted(s for p, s in seen if p == "train") == list(range(20, FINAL + 1, 20))
    assert sorted(s for p, s in seen if p == "eval") == list(range(50, FINAL + 1, 50))
    after = losses(killed)
    for step in rerun:  # re-run after the resume: the same losses as the killed run logged
        assert abs(after[step] - before[step]) < 1e-5, (step, before[step], after[step])

    straight = tmp_path / "straight"
    r = subprocess.run(train_args(data, straight, *LOCAL), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    reference = losses(straight)
    assert sorted(reference) == sorted(after)
    for step, loss in reference.items():
        assert abs(after[step] - loss) < 1e-5, (step, loss, after[step])
    wa, _, ma = load_model(straight)
    wb, _, mb = load_model(killed)
    assert ma["step"] == mb["step"] == FINAL
    for (name, a), (_, b) in zip(wa.state_dict().items(), wb.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), name
    # single-threaded, the resumed run is in fact bit-identical (tests/test_determinism_training.py)
    final = f"checkpoints/step-{FINAL:08d}/model.safetensors"
    assert (killed / final).read_bytes() == (straight / final).read_bytes()
    check_tensorboard_has_each_step_once(killed)


def logged_steps(run: Path) -> list[int]:
    """Train steps logged so far (the last line may be half-written while the run appends)."""
    steps = [0]
    path = run / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec["phase"] == "train":
            steps.append(rec["step"])
    return steps


def check_tensorboard_has_each_step_once(run: Path) -> None:
    """The resumed run's writer purges the killed run's events after the checkpoint."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:  # tensorboard is an optional extra
        return
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == list(range(20, FINAL + 1, 20)), steps


def test_resume_of_a_finished_run_is_a_no_op(tmp_path, data):
    run = tmp_path / "run"
    args = train_args(data, run, "--steps", "20", "--checkpoint-every", "10", "--eval-every", "10")
    assert subprocess.run(args, capture_output=True, timeout=120).returncode == 0
    before = (run / "metrics.jsonl").read_text()
    r = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{run}: step 20")
    assert (run / "metrics.jsonl").read_text() == before
    assert latest_step(run) == 20


# --- Ray -----------------------------------------------------------------------------------------------


def process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command line) of every live process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        table[int(entry.name)] = (int(ppid), state, cmd)
    return table


def ray_processes(driver: int, temp_dir: Path | None = None) -> dict[int, str]:
    """The driver, its descendants and every process whose command line names ``temp_dir``."""
    table = process_table()
    found = {driver} if driver in table else set()
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, _) in table.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    if temp_dir is not None:
        found |= {pid for pid, (_, _, cmd) in table.items() if str(temp_dir) in cmd}
    return {pid: table[pid][2] for pid in found if pid in table}


def naming(temp_dir: Path) -> list[int]:
    """Live processes whose command line names ``temp_dir``."""
    return [pid for pid, (_, state, cmd) in process_table().items() if str(temp_dir) in cmd and state != "Z"]


def alive(pids) -> list[int]:
    table = process_table()
    return [p for p in pids if p in table and table[p][1] != "Z"]  # a zombie has exited


def wait_gone(pids, timeout: float) -> list[int]:
    deadline = time.time() + timeout
    while alive(pids) and time.time() < deadline:
        time.sleep(0.2)
    return alive(pids)


@pytest.mark.ray
def test_sigkill_of_the_ray_driver_stops_every_ray_process_and_the_run_resumes(tmp_path, data):
    # Ray's socket paths must stay under 108 bytes: a short temp dir of our own (RAY_TMPDIR)
    temp_dir = Path(tempfile.mkdtemp(prefix="mhray", dir="/tmp"))
    env = {**os.environ, "RAY_TMPDIR": str(temp_dir)}
    run = tmp_path / "ray"
    ray_args = ("--ray", "--workers", "2", "--checkpoint-every", "20", "--eval-every", "20")
    started: dict[int, str] = {}
    proc = None
    try:
        proc = subprocess.Popen(train_args(data, run, *ray_args, "--steps", "400"), env=env,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and len(ray_checkpoints(run)) < 2:
            time.sleep(0.2)
        assert proc.poll() is None and len(ray_checkpoints(run)) >= 2, "Ray Train wrote no checkpoints in time"
        started = ray_processes(proc.pid, temp_dir)
        names = " ".join(started.values())
        assert "gcs_server" in names and "raylet" in names and "ray::RayTrainWorker" in names, names

        os.killpg(proc.pid, signal.SIGKILL)  # the driver's process group, as Ctrl-C's harder cousin would
        proc.wait()
        left = wait_gone(started, timeout=60)
        assert not left, f"Ray processes outlived their driver: {[started[p][:120] for p in left]}"
        assert not naming(temp_dir), "a process still names the killed run's Ray temp dir"

        killed_at = max(read_meta(c)["step"] for c in ray_checkpoints(run))
        assert 40 <= killed_at < 400
        assert not (run / "latest.json").exists()

        # a plain re-run is refused: Ray Train would otherwise silently continue its stored run
        r = subprocess.run(train_args(data, run, *ray_args, "--steps", "400"), env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2 and "already holds a training run; pass --resume" in r.stderr, r.stderr[-2000:]

        # resume locally from the checkpoints Ray Train persisted...
        local_to = killed_at + 20
        r = subprocess.run(train_args(data, run, "--steps", str(local_to), "--checkpoint-every", "20",
                                      "--eval-every", "20", "--resume"), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert latest_step(run) == local_to
        # ...and on Ray again, from that local checkpoint (newer than anything in Ray's storage)
        final = local_to + 20
        r = subprocess.run(train_args(data, run, *ray_args, "--steps", str(final), "--resume"), env=env,
                           capture_output=True, text=True, timeout=400)
        assert r.returncode == 0, r.stderr[-3000:]
        model, _, meta = load_model(run)
        assert meta["step"] == final
        assert meta["ray"] == {"workers": 2, "restored_from_step": local_to}
        assert not wait_gone(naming(temp_dir), timeout=30), "the resumed run left Ray processes behind"
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in alive(started):  # only processes this test started, by pid
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


# --- no orphans after kill -9 of the command alone ----------------------------------------------------

ORPHAN_BOUND_S = 10.0


def start_times(pids) -> dict[int, str]:
    """pid -> start time (field 22 of /proc/PID/stat) of the live ones: a pid and its start time
    name one process even if the pid is reused."""
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X"):
            found[pid] = fields[19]
    return found


def kill_and_count_survivors(cmd: list[str], ready, env: dict | None = None, timeout: float = 240.0):
    """Start ``cmd``, record its process tree until ``ready(tree, elapsed)`` (tree: pid -> command
    line) says so, ``kill -9`` the command's pid alone, and return (the tree, the processes of it
    still alive ORPHAN_BOUND_S later)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tree: dict[int, str] = {}
    born: dict[int, str] = {}
    try:
        deadline, t0 = time.time() + timeout, time.time()
        while time.time() < deadline and proc.poll() is None:
            now = ray_processes(proc.pid)
            tree.update(now)
            born.update({p: t for p, t in start_times(now).items() if p not in born})
            if ready(tree, time.time() - t0):
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        tree.update(ray_processes(proc.pid))
        born.update({p: t for p, t in start_times(tree).items() if p not in born})
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + ORPHAN_BOUND_S
        while time.time() < deadline and survivors(born):
            time.sleep(0.1)
        return tree, survivors(born)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in survivors(born):  # only processes this test started, by pid
            os.kill(pid, signal.SIGKILL)


def survivors(born: dict[int, str]) -> list[int]:
    now = start_times(born)
    return [p for p, t in born.items() if now.get(p) == t]


def spawned(tree: dict[int, str]) -> int:
    return sum("multiprocessing.spawn" in cmd for cmd in tree.values())


@pytest.mark.slow
def test_sigkill_of_generate_with_two_processes_leaves_no_process_behind(tmp_path):
    out = tmp_path / "data"
    tree, left = kill_and_count_survivors(
        [MIRRORHALL, "generate", "--episodes", "100000", "--processes", "2", "--out", str(out), "--no-progress"],
        ready=lambda tree, _: spawned(tree) == 2 and any(out.glob("shard-*.parquet")))
    assert any("resource_tracker" in cmd for cmd in tree.values()), tree
    assert not left, f"outlived the killed command by {ORPHAN_BOUND_S} s: {[tree[p][:100] for p in left]}"


@pytest.mark.slow
def test_sigkill_of_train_while_two_processes_load_the_data_leaves_no_process_behind(tmp_path):
    data = tmp_path / "data"  # enough shards that loading them takes a while
    r = subprocess.run([MIRRORHALL, "generate", "--episodes", "160", "--episodes-per-shard", "2", "--steps", "20",
                        "--agents", "4", "--out", str(data), "--no-progress", "--processes", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    tree, left = kill_and_count_survivors(
        train_args(str(data), tmp_path / "run", "--data-processes", "2", "--steps", "100000"),
        ready=lambda tree, elapsed: spawned(tree) == 2)
    assert not left, f"outlived the killed command by {ORPHAN_BOUND_S} s: {[tree[p][:100] for p in left]}"
    assert not (tmp_path / "run" / "latest.json").exists()  # killed while loading, as intended


@pytest.mark.ray
@pytest.mark.slow
def test_sigkill_of_the_ray_driver_alone_leaves_no_ray_process_behind(tmp_path, data):
    """Only the driver's pid, not its group: its agents used to linger for a minute, trying to tell
    the dead GCS that raylet died."""
    temp_dir = Path(tempfile.mkdtemp(prefix="mhray", dir="/tmp"))
    env = {**os.environ, "RAY_TMPDIR": str(temp_dir)}
    try:
        tree, left = kill_and_count_survivors(
            train_args(data, tmp_path / "ray", "--ray", "--workers", "2", "--steps", "100000",
                       "--checkpoint-every", "50"),
            ready=lambda tree, _: sum("RayTrainWorker" in cmd for cmd in tree.values()) == 2
            and bool(ray_checkpoints(tmp_path / "ray")), env=env, timeout=400)
        names = " ".join(tree.values())
        assert "gcs_server" in names and "raylet" in names and "DashboardAgent" in names, names[:2000]
        assert not left, f"outlived the killed driver by {ORPHAN_BOUND_S} s: {[tree[p][:100] for p in left]}"
        assert not naming(temp_dir), "a process still names the killed run's Ray temp dir"
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


REAPER_SCRIPT = """
import os, signal, subprocess, sys
from mirrorhall.raykit import Reaper
reaper = Reaper()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
reaper.watch_children()
print(reaper.proc.pid, child.pid, flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
reaper.close()
"""


@pytest.mark.parametrize("end", ["kill", "clean"])
def test_the_reaper_kills_what_a_killed_driver_leaves_and_nothing_after_a_clean_end(end):
    """``raykit.Reaper`` without Ray: a driver lists its child, then dies by ``kill -9`` (the
    reaper kills the child) or ends cleanly (the child is left alone: Ray stops its own)."""
    r = subprocess.run([sys.executable, "-c", REAPER_SCRIPT, end], capture_output=True, text=True, timeout=60)
    reaper, child = map(int, r.stdout.split())
    born = start_times([child])
    try:
        assert r.returncode == (-signal.SIGKILL if end == "kill" else 0), r.stderr
        if end == "kill":
            deadline = time.time() + ORPHAN_BOUND_S
            while time.time() < deadline and (survivors(born) or start_times([reaper])):
                time.sleep(0.05)
            assert not survivors(born), "the reaper left the killed driver's child running"
        else:
            time.sleep(1.0)
            assert survivors(born), "the reaper killed a child after a clean end"
        assert not start_times([reaper]), "the reaper outlived its work"
    finally:
        for pid in survivors(born):
            os.kill(pid, signal.SIGKILL)
