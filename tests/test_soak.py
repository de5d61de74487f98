"""Short soak runs (the long ones are `benchmarks/soak.py`, figures in docs/reliability.md), Ray's
network exposure (a local Ray binds to loopback only, with no dashboard; so do `train --ray` and
`generate --workers`, torch's rendezvous included), and streaming generation (a dataset of 10**9
episodes writes its first shard at once, in flat memory: `benchmarks/generate_streaming.py`).

Memory threshold, as in the benchmark: RSS at the end minus RSS after warm-up below 50 MiB.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOUND_MIB = 50.0


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"mirrorhall_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


soak = load_benchmark("soak")
streaming = load_benchmark("generate_streaming")
MIRRORHALL = str(Path(sys.executable).parent / "mirrorhall")


def test_core_scene_of_64_agents_keeps_memory_flat():
    r = soak.core_soak(env_steps=20_000, agents=64, worlds=64, episode_steps=50, driver="random",
                       sample_every=640, bound_mib=BOUND_MIB)
    assert r["env_steps"] >= 20_000
    assert r["ok"] and r["growth_mib"] < BOUND_MIB, r
    assert r["samples"] > 20


def test_scripted_persona_scene_of_64_agents_keeps_memory_flat():
    r = soak.core_soak(env_steps=4096, agents=64, worlds=16, episode_steps=32, driver="personas",
                       sample_every=256, bound_mib=BOUND_MIB)
    assert r["env_steps"] >= 4096 and r["ok"], r


def test_model_driven_scene_keeps_memory_flat(tiny_run):
    """Any trained checkpoint will do: the shared tiny run of tests/conftest.py."""
    r = soak.model_soak(tiny_run, steps=300, scene_agents=48, model_agents=32, episode_steps=100,
                        sample_every=10, bound_mib=BOUND_MIB)
    assert r["env_steps"] == 300 and r["model_agents"] == 32
    assert r["ok"], r


def test_memory_summary_flags_growth():
    mem = soak.Memory(warmup_steps=10)
    mem.samples = [(0, 100.0), (10, 120.0), (20, 150.0), (30, 200.0)]
    r = mem.summary(bound_mib=50)
    assert r["growth_mib"] == 80 and not r["ok"] and r["fitted_growth_mib"] > 50


# --- Ray on loopback ----------------------------------------------------------------------------------

LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
"""127.0.0.1, ::ffff:127.0.0.1 and ::1 as /proc/net/{tcp,udp}{,6} write them."""


def socket_inodes(pid: int) -> set[str]:
    found = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def listening() -> dict[str, tuple[str, str, int]]:
    """inode -> (protocol, local address in hex, port) of every listening TCP / bound UDP socket."""
    out = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        path = Path("/proc/net") / proto
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            f = line.split()
            local, state, inode = f[1], f[3], f[9]
            if (proto.startswith("tcp") and state == "0A") or (proto.startswith("udp") and state == "07"):
                addr, port = local.split(":")
                out[inode] = (proto, addr, int(port, 16))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def running(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie has exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def descendants(root: int) -> set[int]:
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, grew = set(), True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if (ppid == root or ppid in found) and pid not in found:
                found.add(pid)
                grew = True
    return found


@pytest.mark.ray
def test_local_ray_listens_on_loopback_only_with_no_dashboard(monkeypatch):
    """As measured with `ss` on this machine: every socket the driver and the Ray processes it starts
    listen on is bound to 127.0.0.1, and nothing listens on the dashboard port 8265."""
    from mirrorhall.raykit import LOOPBACK_ENV, ray_session

    for key in LOOPBACK_ENV:  # the defaults, not whatever this shell exports
        monkeypatch.delenv(key, raising=False)
    me = os.getpid()
    before = socket_inodes(me)
    earlier = descendants(me)  # children of earlier tests (e.g. a notebook kernel) are not this session's
    temp_dir = tempfile.mkdtemp(prefix="mhray", dir="/tmp")
    try:
        with ray_session(num_cpus=1, temp_dir=temp_dir) as ray:
            assert ray.get(ray.remote(lambda: 1).remote()) == 1  # a worker process is up as well
            time.sleep(2)  # the agents finish binding
            pids = descendants(me) - earlier
            names = " ".join(cmdline(p) for p in pids)
            assert "raylet" in names and "gcs_server" in names, names[:500]
            table = listening()
            ours = {i: table[i] for p in pids | {me} for i in socket_inodes(p) - (before if p == me else set())
                    if i in table}
            assert len(ours) >= 3, "found too few Ray sockets to trust this check"
            exposed = [v for v in ours.values() if v[1] not in LOOPBACK]
            assert not exposed, f"sockets bound beyond loopback: {exposed}"
            assert all(port != 8265 for _, _, port in table.values()), "something listens on the dashboard port"
        deadline = time.time() + 30
        while any(map(running, pids)) and time.time() < deadline:
            time.sleep(0.5)
        assert not any(map(running, pids)), "ray_session left Ray processes running"
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def watch_listeners(cmd: list[str], env: dict, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``cmd`` to its end, sampling every 0.1 s the listening sockets of its process tree;
    returns its result and {(pid, inode): (command lines the pid had, protocol, address, port)}
    of every socket seen (a Ray worker is renamed once it hosts an actor)."""
    seen: dict[tuple[int, str], tuple[str, str, int]] = {}
    names: dict[int, set[str]] = {}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline:
            table = listening()
            for pid in descendants(proc.pid) | {proc.pid}:
                names.setdefault(pid, set()).add(cmdline(pid))
                for inode in socket_inodes(pid) & set(table):
                    seen.setdefault((pid, inode), table[inode])
            time.sleep(0.1)
        assert proc.poll() is not None, f"{cmd[1]} did not finish in {timeout} s"
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    found = {key: (" | ".join(sorted(names[key[0]])), *where) for key, where in seen.items()}
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), found


@pytest.mark.ray
@pytest.mark.slow
def test_generate_and_train_on_ray_listen_on_loopback_only(tmp_path):
    """`generate --workers 2` and `train --ray --workers 2`, sampled while they run: every socket
    their process trees listen on is on 127.0.0.1 / ::1, the Ray Train workers' included (torch's
    rendezvous store and gloo; the store listened on all interfaces before)."""
    temp_dir = tempfile.mkdtemp(prefix="mhray", dir="/tmp")  # short: Ray's socket paths live here
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    env["RAY_TMPDIR"] = temp_dir
    try:
        data = tmp_path / "data"
        r, generated = watch_listeners([MIRRORHALL, "generate", "--episodes", "64", "--episodes-per-shard", "4",
                                        "--steps", "20", "--agents", "4", "--workers", "2", "--out", str(data),
                                        "--no-progress"], env, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        r, trained = watch_listeners([MIRRORHALL, "train", "--data", str(data), "--out", str(tmp_path / "run"),
                                      "--size", "tiny", "--threads", "1", "--no-progress", "--ray", "--workers", "2",
                                      "--steps", "60", "--checkpoint-every", "30", "--eval-every", "30"],
                                     env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        for name, seen in (("generate", generated), ("train", trained)):
            owners = " ".join(c for c, *_ in seen.values())
            assert "raylet" in owners and "gcs_server" in owners, (name, owners[:500])
            exposed = [v for v in seen.values() if v[2] not in LOOPBACK]
            assert not exposed, f"{name}: sockets bound beyond loopback: {exposed}"
        workers = [v for v in trained.values() if "RayTrainWorker" in v[0]]
        # each worker's Ray server and gloo listener, and rank 0's rendezvous store
        assert len(workers) >= 3, f"too few Ray Train worker sockets seen to trust this check: {trained}"
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_generate_of_a_billion_episodes_streams_its_first_shard(tmp_path):
    """10**9 episodes (31 million shards): the first shard is written within seconds, not after
    planning every shard (before: none after 120 s, 2.5 GB of memory), memory stays far below
    1 GiB, and a `kill -9` of the command's session leaves nothing running."""
    r = streaming.stream(10**9, seconds=3.0, out=tmp_path)
    assert r["first_shard_s"] is not None and r["first_shard_s"] < 30, r  # the benchmark's bound is 10 s
    assert not r["exited_early"], r
    assert r["shards"] >= 1 and r["rss_mib_peak"] < 1024, r
    assert r["left_running"] == [], r
    manifest = (tmp_path / "data" / "manifest.json").read_text()
    assert len(manifest) < 10_000  # the manifest lists written shards only, not the 31 million to come


@pytest.mark.slow
def test_killed_streaming_generation_resumes_with_the_same_bytes(tmp_path):
    """Streaming keeps resumption exact: kill -9 after some shards, re-run, every shard equals
    that of an uninterrupted run."""
    args = ["--episodes", "48", "--episodes-per-shard", "4", "--steps", "10", "--agents", "3", "--no-progress"]
    straight = tmp_path / "straight"
    assert subprocess.run([MIRRORHALL, "generate", *args, "--out", str(straight)], capture_output=True,
                          timeout=300).returncode == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen([MIRRORHALL, "generate", *args, "--out", str(killed), "--processes", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(killed.glob("shard-*.parquet"))) < 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    r = subprocess.run([MIRRORHALL, "generate", *args, "--out", str(killed)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in straight.iterdir())
    assert names == sorted(p.name for p in killed.iterdir())
    for name in names:
        assert (straight / name).read_bytes() == (killed / name).read_bytes(), name
