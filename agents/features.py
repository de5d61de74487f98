"""Relational per-action features: what each agent sees of every agent's situation.

For observer i and entity j (any agent i can see, itself included), and each of the 5 moves a,
the feature row says what a would do for j, judged from i's observation only:

    [ d_c(a) - d_c(stay) for each colour c ]   change of j's distance to the nearest gem of c
                                               that i can see (0 if i sees none of c)
    [ seen_c for each colour c ]                i sees a gem of colour c
    d_near(a) - d_near(stay)                   change of j's distance to the nearest other agent i sees
    d_i(a) - d_i(stay)                         change of j's distance to the observer i (0 for j = i)
    blocked(a)                                 the move runs into a wall

Trait personas are softmax functions of exactly such differences, so these features let a model
read behaviour without first learning to see. They are computed from the world state restricted
to what i observes (``WorldCore.visible``): no persona, trait or label ever enters them.
"""

from __future__ import annotations

import numpy as np

from mirrorhall.envs.core import WorldCore, WorldState

EGO_COLUMN = -2
"""Index of the distance-to-observer column."""


def n_features(n_colors: int) -> int:
    return 2 * n_colors + 3


def entity_features(core: WorldCore, state: WorldState) -> tuple[np.ndarray, np.ndarray]:
    """(feats (B, Ni, Nj, 5, F) float32, visible (B, Ni, Nj) bool) for every observer i, entity j."""
    cfg = core.config
    b, n = state.last_action.shape
    c, per = cfg.n_colors, cfg.gems_per_color
    gem_vis, agent_vis = core.visible(state)  # (B, Ni, G), (B, Ni, Nj)
    pos = state.agent_pos  # (B, N, 2)
    after = core.move_targets(pos)  # (B, Nj, 5, 2)

    d_gem = np.abs(after[:, :, :, None, :] - state.gem_pos[:, None, None]).sum(-1)  # (B, Nj, 5, G)
    big = cfg.width + cfg.height
    d_gem = np.where(gem_vis[:, :, None, None, :], d_gem[:, None], big)  # (B, Ni, Nj, 5, G)
    d_col = d_gem.reshape(b, n, n, 5, c, per).min(-1)  # (B, Ni, Nj, 5, C)
    seen = gem_vis.reshape(b, n, c, per).any(-1)  # (B, Ni, C)
    d_gem_delta = np.where(seen[:, :, None, None, :], d_col - d_col[:, :, :, :1], 0)

    d_agent = np.abs(after[:, :, :, None, :] - pos[:, None, None]).sum(-1)  # (B, Nj, 5, Nk)
    others = agent_vis[:, :, None, :] & ~np.eye(n, dtype=bool)[None, None]  # (B, Ni, Nj, Nk)
    near = np.where(others[:, :, :, None, :], d_agent[:, None], np.inf).min(-1)  # (B, Ni, Nj, 5)
    with np.errstate(invalid="ignore"):  # inf - inf where an observer sees no other agent; zeroed next
        near_delta = np.where(np.isfinite(near[..., :1]), near - near[..., :1], 0.0)
    near_delta = np.nan_to_num(near_delta, nan=0.0, posinf=0.0, neginf=0.0)

    to_obs = np.swapaxes(d_agent, 1, 3)  # (B, Ni=k, 5, Nj)
    to_obs = np.moveaxis(to_obs, 3, 2)  # (B, Ni, Nj, 5)
    ego_delta = np.where(np.eye(n, dtype=bool)[None, :, :, None], 0, to_obs - to_obs[..., :1])

    blocked = (after == pos[:, :, None, :]).all(-1)  # (B, Nj, 5)
    blocked[:, :, 0] = False
    blocked = np.broadcast_to(blocked[:, None], (b, n, n, 5))

    feats = np.concatenate([
        d_gem_delta.astype(np.float32),
        np.broadcast_to(seen[:, :, None, None, :], (b, n, n, 5, c)).astype(np.float32),
        near_delta[..., None].astype(np.float32),
        ego_delta[..., None].astype(np.float32),
        blocked[..., None].astype(np.float32),
    ], axis=-1)
    return feats, agent_vis
