"""Ray on this machine's terms: loopback only, no dashboard, no usage stats, lazy imports.

``ray_session()`` starts a local Ray instance bound to 127.0.0.1 (or connects to the cluster at
``address``) and shuts down what it started. Importing Ray costs seconds, so nothing in mirrorhall
imports it at module level.

No Ray process outlives a local session's driver, ``kill -9`` included. Ray ties gcs_server and
raylet to the driver with a parent-death signal, and workers exit with their raylet; but raylet's
agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) notice its death only after trying
for 60 s to report it to the dead GCS. A small reaper process (``Reaper``), told the pids of the
Ray processes at start, kills whatever of them is left once the driver is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK_ENV = {
    # Without this, Ray on Linux rewrites 127.0.0.1 to the routable address and listens on all
    # interfaces; with it every socket stays on loopback.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def loopback_env() -> None:
    """Set the loopback defaults (a user's own values win).

    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, when ``ray`` is first imported; if
    something imported Ray before this ran, the frozen constant is brought in line with the
    environment, so a late import order cannot silently expose the instance beyond loopback.
    """
    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        constants.ENABLE_RAY_CLUSTER = False


def local_auth_token() -> bool:
    """Whether this machine holds a Ray auth token (the places Ray's own token loader reads)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    return os.path.isfile(path) and os.path.getsize(path) > 0


def token_auth_for(address: str | None) -> None:
    """Send the local auth token when connecting to an explicit cluster address.

    ``ray start --head`` turns token authentication on whenever a token exists on the machine,
    and ``ray.init(address="auto")`` sends it, but ``ray.init(address="HOST:PORT")`` only sends
    it when ``RAY_AUTH_MODE=token`` is set; otherwise the connection is refused
    (``InvalidAuthToken``). With an explicit address, no ``RAY_AUTH_MODE`` of the user's and a
    token on this machine, set ``RAY_AUTH_MODE=token``: a cluster without authentication
    accepts such a client too.
    """
    if address in (None, "auto", "local") or "RAY_AUTH_MODE" in os.environ:
        return
    if local_auth_token():
        os.environ["RAY_AUTH_MODE"] = "token"


def _reload_ray_config() -> None:
    """Make an already imported Ray re-read ``RAY_*`` settings (auth mode among them) from the
    environment, as Ray itself does when it turns token authentication on. Without it, a process
    that imported Ray before ``RAY_AUTH_MODE`` changed starts a GCS that expects a token its own
    driver does not send."""
    try:
        from ray._raylet import Config
    except ImportError:  # a Ray without it: nothing cached to refresh
        return
    Config.initialize("")


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat): a pid and its start time
    name one process, even once the pid is reused. None if it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _descendants(root: int) -> list[int]:
    """The live descendants of ``root`` (Linux: read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


REAPER_GRACE_S = 2.0
"""How long the reaper waits between SIGTERM and SIGKILL."""


class Reaper:
    """A process that outlives this one to kill the Ray processes it leaves behind.

    It reads ``pid start-time`` lines on stdin. End of input without a ``done`` line means this
    process died (``kill -9`` included: the kernel closes the pipe): the reaper then sends
    SIGTERM to every listed process still alive (same pid and start time), SIGKILL to those left
    after ``REAPER_GRACE_S``, and exits. ``done`` (a clean ``ray.shutdown()``) makes it exit at
    once. It runs in a session of its own, so a Ctrl-C or a ``kill`` of the caller's process group
    does not stop it before it has done its work. Linux only (it reads /proc); elsewhere a no-op.
    """

    def __init__(self):
        self.proc = None
        if not sys.platform.startswith("linux"):
            return
        self.proc = subprocess.Popen([sys.executable, "-c", "from mirrorhall.raykit import reap; reap()"],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, text=True)

    def watch_children(self) -> None:
        """List every current descendant of this process for the reaper."""
        if self.proc is None:
            return
        lines = [f"{pid} {start}\n" for pid in _descendants(os.getpid())
                 if pid != self.proc.pid and (start := _start_time(pid)) is not None]
        try:
            self.proc.stdin.write("".join(lines))
            self.proc.stdin.flush()
        except OSError:  # the reaper is gone (killed by hand): Ray's own fate-sharing remains
            pass

    def close(self) -> None:
        """A clean end: the reaper exits without killing anything."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.write("done\n")
            self.proc.stdin.close()
        except OSError:  # it is gone already
            pass
        self.proc.wait(timeout=30)


def reap() -> None:
    """The reaper's main (see ``Reaper``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watched: dict[int, str] = {}
    for line in sys.stdin:
        if line.strip() == "done":
            return
        pid, start = line.split()
        watched[int(pid)] = start

    def alive() -> list[int]:
        return [pid for pid, start in watched.items() if _start_time(pid) == start]

    for sig, wait in ((signal.SIGTERM, REAPER_GRACE_S), (signal.SIGKILL, 0.0)):
        for pid in alive():
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, dashboard: bool = False,
                temp_dir: str | None = None):
    """Yield the ``ray`` module, connected. Starts (and later stops) a local instance if needed."""
    loopback_env()
    token_auth_for(address)
    refresh = "ray" in sys.modules  # Ray read its settings at import; re-read the environment
    import ray

    if refresh and not ray.is_initialized():
        _reload_ray_config()

    started, reaper = False, None
    if not ray.is_initialized():
        kwargs = {"include_dashboard": dashboard, "log_to_driver": False,
                  "configure_logging": True, "logging_level": "ERROR"}
        if address is None:
            kwargs.update(num_cpus=num_cpus, _temp_dir=temp_dir)
            reaper = Reaper()
        else:
            kwargs.update(address=address)
        try:
            ray.init(**kwargs)
        except BaseException:
            if reaper is not None:
                reaper.close()
            raise
        started = True
        if reaper is not None:
            reaper.watch_children()  # gcs_server, raylet, its agents, the first workers
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
        if reaper is not None:
            reaper.close()
