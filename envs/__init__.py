"""mirrorhall.envs: the world. ``from mirrorhall.envs import mirrorhall_v0``."""

from mirrorhall.envs import mirrorhall_v0

REGISTRY = {"mirrorhall_v0": mirrorhall_v0}
"""Versioned environment names -> modules with ``parallel_env`` and ``env``."""


def make(name: str = "mirrorhall_v0", **kwargs):
    """``make("mirrorhall_v0", n_agents=...)`` -> a ParallelEnv; unknown names raise ValueError."""
    if name not in REGISTRY:
        raise ValueError(f"unknown environment {name!r}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[name].parallel_env(**kwargs)


__all__ = ["REGISTRY", "make", "mirrorhall_v0"]
