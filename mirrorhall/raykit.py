"""Ray on this machine's terms: loopback only, no dashboard, no usage stats, lazy imports.

``ray_session()`` starts a local Ray instance bound to 127.0.0.1 (or connects to the cluster at
``address``) and shuts down what it started. Importing Ray costs seconds, so nothing in mirrorhall
imports it at module level.
"""

from __future__ import annotations

import contextlib
import os
import sys

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

    started = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": dashboard, "log_to_driver": False,
                  "configure_logging": True, "logging_level": "ERROR"}
        if address is None:
            kwargs.update(num_cpus=num_cpus, _temp_dir=temp_dir)
        else:
            kwargs.update(address=address)
        ray.init(**kwargs)
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
