"""Short soak runs (the long ones are `benchmarks/soak.py`, figures in docs/reliability.md) and
Ray's network exposure: a local Ray binds to loopback only, with no dashboard.

Memory threshold, as in the benchmark: RSS at the end minus RSS after warm-up below 50 MiB.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOUND_MIB = 50.0


def load_soak():
    spec = importlib.util.spec_from_file_location("mirrorhall_bench_soak", ROOT / "benchmarks" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


soak = load_soak()


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
