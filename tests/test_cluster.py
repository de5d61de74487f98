"""A real two-node Ray cluster on this machine, on loopback, driven through the ``mirrorhall`` CLI.

A head (``ray start --head --node-ip-address=127.0.0.1 --num-cpus=1``) and a second node
(``ray start --address=127.0.0.1:PORT --num-cpus=1``) with their own ``--temp-dir``; then, as
subprocesses given the explicit address, ``mirrorhall generate --ray-address ... --workers 2``
(its shards must be byte-identical to a local run of the same seed) and
``mirrorhall train --ray --ray-address ... --workers 2 --size tiny --steps 20`` (its checkpoint
must load with ``load_model``). Every listening socket of the cluster's processes must be on
127.0.0.1. The cluster is stopped in ``finally`` by the pids it started (processes naming its
temp dir or address, or holding a file open in its temp dir, and their children): SIGTERM, then SIGKILL after 10 s; never by name.

Two things Ray 2.60 needs on a Linux machine (measured here):

- ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps every socket on loopback, but ``ray start
  --address`` then refuses to start a second node ("Multi-node Ray clusters are not supported on
  Windows and OSX"); with it unset (=1), Ray rewrites 127.0.0.1 to the machine's routable
  address. The second node is therefore started by ``ray``'s own CLI entry point with that one
  gate lifted for the CLI module only (``WORKER_START``); Ray's services still see 0 and stay on
  loopback (checked below). On separate machines none of this applies: plain ``ray start``.
- Token authentication: ``ray start --head`` enables it when a token exists on the machine
  (``~/.ray/auth_token``); the second node needs ``RAY_AUTH_MODE=token`` then, and so would a
  driver given an explicit address, which ``mirrorhall.raykit.ray_session`` now sets
  itself (the CLI subprocesses here run without ``RAY_AUTH_MODE``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from mirrorhall.raykit import local_auth_token  # noqa: E402

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
MIRRORHALL = str(BIN / "mirrorhall")
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}

# `ray start` for a non-head node, with the CLI's multi-node gate lifted and nothing else changed.
WORKER_START = r"""
import sys, types
import ray._private.ray_constants as rc
import ray.scripts.scripts as scripts
gate = types.ModuleType("ray_constants_cli_gate")
gate.__dict__.update(vars(rc))
gate.ENABLE_RAY_CLUSTER = True
scripts.ray_constants = gate
sys.argv = ["ray", *sys.argv[1:]]
sys.exit(scripts.main())
"""

GEN_ARGS = ["--population", "crowd", "--episodes", "12", "--episodes-per-shard", "3", "--steps", "12",
            "--agents", "4", "--seed", "5", "--no-progress"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, state, cmdline) of every process we can read."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[int(name)] = (int(fields[1]), fields[0], cmd)
    return out


def holds_file_under(pid: int, folder: str) -> bool:
    """Whether process ``pid`` has a file open under ``folder`` (its logs, its sockets' paths)."""
    try:
        inside = folder.rstrip("/") + "/"
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(inside) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def cluster_pids(markers: tuple[str, ...]) -> set[int]:
    """Live processes whose command line names the cluster (temp dir, address), or that hold a file
    open in its temp dir (the first marker: a Ray process orphaned by a failed start renames itself,
    "ray::DashboardAgent", and keeps its logs open there), and their descendants."""
    table = process_table()
    pids = {p for p, (_, st, cmd) in table.items() if st != "Z"
            and (any(m in cmd for m in markers) or holds_file_under(p, markers[0]))}
    pids.discard(os.getpid())
    while True:
        kids = {p for p, (pp, st, _) in table.items() if pp in pids and st != "Z"} - pids
        if not kids:
            return pids
        pids |= kids


def stop_cluster(markers: tuple[str, ...], grace: float = 10.0) -> None:
    pids = cluster_pids(markers)
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and cluster_pids(markers):
        time.sleep(0.5)
    for p in cluster_pids(markers):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and cluster_pids(markers):
        time.sleep(0.2)


def listening_addresses(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, local ip) of every listening TCP socket the processes ``pids`` hold."""
    inodes = {}
    for proto in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A":  # LISTEN
                inodes[f[9]] = _ip(f[1].split(":")[0])
    out = []
    for p in pids:
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                out.append((p, inodes[link[8:-1]]))
    return out


def _ip(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def run(cmd: list[str], env: dict, timeout: float, cwd=None) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert r.returncode == 0, f"{cmd[:3]} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.mark.ray
@pytest.mark.slow
def test_generate_and_train_on_a_two_node_loopback_cluster(tmp_path):
    from mirrorhall.imitation.checkpoint import load_model

    t0 = time.perf_counter()
    temp_dir = tempfile.mkdtemp(prefix="mhray", dir="/tmp")  # short: Ray's socket paths live here
    port = free_port()
    address = f"127.0.0.1:{port}"
    markers = (temp_dir, address)
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env = {**base, **LOOPBACK}
    node_env = {**env, "RAY_AUTH_MODE": "token"} if local_auth_token() else env
    timings = {}
    try:
        run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
             "--include-dashboard=false", f"--temp-dir={temp_dir}", "--disable-usage-stats"], env, 120)
        run([sys.executable, "-c", WORKER_START, "start", f"--address={address}", "--node-ip-address=127.0.0.1",
             "--num-cpus=1", f"--temp-dir={temp_dir}", "--disable-usage-stats"], node_env, 120)
        timings["cluster up"] = time.perf_counter() - t0

        # two alive nodes of 1 CPU, both on 127.0.0.1, seen by a driver given the explicit address
        probe = ("import json; from mirrorhall.raykit import ray_session\n"
                 f"with ray_session(address={address!r}) as ray:\n"
                 "    print(json.dumps([(n['NodeManagerAddress'], n['Resources'].get('CPU')) "
                 "for n in ray.nodes() if n['Alive']]))")
        nodes = json.loads(run([sys.executable, "-c", probe], env, 120).stdout.strip().splitlines()[-1])
        assert sorted(nodes) == [["127.0.0.1", 1.0], ["127.0.0.1", 1.0]], nodes
        sockets = listening_addresses(cluster_pids(markers))
        assert sockets, "found no listening socket of the cluster's processes"
        assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for _, ip in sockets), sockets

        # generate on the cluster (2 shard tasks at a time: one per node) == a local run
        t = time.perf_counter()
        run([MIRRORHALL, "generate", *GEN_ARGS, "--out", str(tmp_path / "ray_data"), "--workers", "2",
             "--ray-address", address], env, 300)
        timings["generate on the cluster"] = time.perf_counter() - t
        run([MIRRORHALL, "generate", *GEN_ARGS, "--out", str(tmp_path / "local_data")], env, 300)
        on_ray = json.loads((tmp_path / "ray_data" / "manifest.json").read_text())
        local = json.loads((tmp_path / "local_data" / "manifest.json").read_text())
        assert on_ray["complete"] and len(on_ray["shards"]) == 4
        assert on_ray["shards"] == local["shards"]  # sha256, bytes and samples of every shard
        for name in local["shards"]:
            assert (tmp_path / "ray_data" / name).read_bytes() == (tmp_path / "local_data" / name).read_bytes()

        # Ray Train on the cluster: 2 workers x 0.5 CPU (the train command's default)
        t = time.perf_counter()
        r = run([MIRRORHALL, "train", "--data", str(tmp_path / "ray_data"), "--out", str(tmp_path / "run"),
                 "--ray", "--ray-address", address, "--workers", "2", "--size", "tiny", "--steps", "20",
                 "--eval-every", "10", "--checkpoint-every", "10", "--threads", "1", "--no-progress"], env, 420)
        timings["train on the cluster"] = time.perf_counter() - t
        assert "step 20" in r.stdout
        model, tokenizer, meta = load_model(tmp_path / "run")
        assert meta["step"] == 20 and meta["ray"]["workers"] == 2
        assert model.config.d_model == 32  # tiny
    finally:
        t = time.perf_counter()
        stop_cluster(markers)
        timings["stop"] = time.perf_counter() - t
        survivors = cluster_pids(markers)
        if not survivors:
            shutil.rmtree(temp_dir, ignore_errors=True)
    assert not survivors, f"cluster processes survived the stop: {sorted(survivors)}"
    print("\n" + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f"; total {time.perf_counter() - t0:.0f} s")


def test_explicit_addresses_send_the_local_auth_token(tmp_path, monkeypatch):
    """ray_session's rule: explicit address + a token on this machine + no RAY_AUTH_MODE -> token."""
    from mirrorhall.raykit import token_auth_for

    token = tmp_path / "auth_token"
    token.write_text("x" * 32)
    # record RAY_AUTH_MODE's original state first: token_auth_for writes os.environ directly, and
    # monkeypatch restores, in reverse order, the value each of its own calls found
    monkeypatch.setenv("RAY_AUTH_MODE", "placeholder")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    for address, want in ((None, None), ("auto", None), ("127.0.0.1:6379", "token")):
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
        token_auth_for(address)
        assert os.environ.get("RAY_AUTH_MODE") == want, address
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's choice wins
    token_auth_for("127.0.0.1:6379")
    assert os.environ["RAY_AUTH_MODE"] == "disabled"
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    token_auth_for("127.0.0.1:6379")  # no token here: nothing to send
    assert "RAY_AUTH_MODE" not in os.environ


@pytest.mark.ray
def test_ray_imported_first_still_starts_on_loopback_with_token_auth(tmp_path):
    """Ray freezes some settings at import: a process that imported it before mirrorhall, and then
    had RAY_AUTH_MODE set (as ray_session does for explicit addresses), still gets a working local
    instance whose processes listen on 127.0.0.1 only."""
    token = tmp_path / "auth_token"
    token.write_text("a" * 64)
    temp_dir = tempfile.mkdtemp(prefix="mhray", dir="/tmp")  # short: Ray's socket paths live here
    script = (
        "import os, ray\n"  # imported before the loopback defaults and the auth mode are set
        "os.environ['RAY_AUTH_MODE'] = 'token'\n"
        "from mirrorhall.raykit import ray_session\n"
        f"with ray_session(num_cpus=1, temp_dir={temp_dir!r}) as ray:\n"
        "    print('node', ray.nodes()[0]['NodeManagerAddress'], ray.get(ray.remote(lambda: 7).remote()))\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env = {**base, "RAY_AUTH_TOKEN_PATH": str(token)}
    try:
        r = run([sys.executable, "-c", script], env, 180)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert r.stdout.strip().splitlines()[-1] == "node 127.0.0.1 7", r.stdout[-500:]
