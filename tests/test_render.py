"""Rendering: RGB frames, ANSI text, GIF animations and the human viewer."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mirrorhall.envs.core import COLOR_NAMES, WorldConfig, WorldCore
from mirrorhall.envs.render import (
    FLOOR_RGB,
    GEM_RGB,
    WALL_RGB,
    HumanViewer,
    agent_colors,
    footer_height,
    render_ansi,
    render_rgb,
    save_animation,
)


def make_state(config: WorldConfig, steps: int = 3, seed: int = 0):
    core = WorldCore(config)
    rng = np.random.default_rng(seed)
    state = core.reset(batch_size=1, rng=rng)
    for _ in range(steps):
        core.step(state, rng.integers(0, 5, size=(1, config.n_agents)), rng)
    return core, state, rng


def cell_block(frame: np.ndarray, row: int, col: int, cell: int) -> np.ndarray:
    """(cell, cell, 3) pixels of one grid cell."""
    return frame[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell]


NON_SQUARE = WorldConfig(
    n_agents=5, width=13, height=9, n_colors=8, gems_per_color=1, interior_walls=((4, 6), (4, 7))
)


@pytest.mark.parametrize("cell", [8, 20, 32])
def test_rgb_shape_and_dtype_on_non_square_grid(cell):
    _, state, _ = make_state(NON_SQUARE)
    frame = render_rgb(NON_SQUARE, state, cell=cell)
    assert footer_height(cell) == max(14, cell // 2)
    assert frame.shape == (9 * cell + max(14, cell // 2), 13 * cell, 3)
    assert frame.dtype == np.uint8


def test_gem_cells_show_their_colour_and_walls_are_wall_coloured():
    cell = 32
    _, state, _ = make_state(NON_SQUARE, steps=4, seed=3)
    frame = render_rgb(NON_SQUARE, state, cell=cell)
    agent_cells = {tuple(p) for p in state.agent_pos[0].tolist()}
    for (r, c), color in zip(state.gem_pos[0].tolist(), state.gem_color.tolist(), strict=True):
        assert (r, c) not in agent_cells
        centre = cell_block(frame, r, c, cell)[
            cell // 2 - 2 : cell // 2 + 2, cell // 2 - 2 : cell // 2 + 2
        ]
        assert (centre == GEM_RGB[color]).all(), COLOR_NAMES[color]
    walls = NON_SQUARE.walls()
    for r, c in np.argwhere(walls):
        assert (cell_block(frame, r, c, cell) == WALL_RGB).all(), (r, c)
    occupied = agent_cells | {tuple(p) for p in state.gem_pos[0].tolist()}
    r, c = next((r, c) for r, c in np.argwhere(~walls).tolist() if (r, c) not in occupied)
    assert (cell_block(frame, r, c, cell)[2:-2, 2:-2] == FLOOR_RGB).all()


def test_gem_palette_is_distinct_and_follows_colour_names():
    assert GEM_RGB.shape == (len(COLOR_NAMES), 3)
    assert len({tuple(c) for c in GEM_RGB.tolist()}) == len(COLOR_NAMES)
    red, green, blue = GEM_RGB[:3].astype(int)
    assert red.argmax() == 0 and green.argmax() == 1 and blue.argmax() == 2


def test_agents_are_drawn_in_their_own_cell_with_their_own_colours():
    config = WorldConfig(n_agents=8)
    fill, line = agent_colors(24)
    assert len({tuple(c) for c in line.tolist()}) == 24
    assert len({tuple(c) for c in line[:8].tolist()}) == 8
    _, state, _ = make_state(config)
    state.last_action[0] = -1
    frame = render_rgb(config, state)
    for a, (r, c) in enumerate(state.agent_pos[0].tolist()):
        block = cell_block(frame, r, c, 32).reshape(-1, 3)
        for colour in (fill[a], line[a]):
            assert (block == colour).all(axis=1).any(), a


def test_moving_or_stacking_an_agent_only_changes_the_cells_involved():
    cell = 32
    config = WorldConfig(n_agents=8)
    _, state, _ = make_state(config)
    state.last_action[0] = -1
    base = render_rgb(config, state)

    moved = state.copy()
    src, dst = tuple(state.agent_pos[0, 1]), tuple(state.agent_pos[0, 0])
    moved.agent_pos[0, 1] = dst
    stacked = render_rgb(config, moved)
    diff = (stacked != base).any(-1)[: config.height * cell]
    changed = {tuple(x) for x in np.argwhere(diff) // cell}
    assert changed == {src, dst}
    fill, _ = agent_colors(config.n_agents)
    block = cell_block(stacked, *dst, cell).reshape(-1, 3)
    assert all((block == fill[a]).all(axis=1).any() for a in (0, 1))

    pointed = state.copy()
    pointed.last_action[0, 2] = 4
    r, c = state.agent_pos[0, 2]
    diff = (render_rgb(config, pointed) != base).any(-1)
    rows, cols = np.nonzero(diff)
    assert rows.size > 0
    assert (rows // cell == r).all() and (cols // cell == c).all()
    assert (cols % cell > cell // 2).all()


def test_ansi_layout_walls_gems_and_agents():
    config = WorldConfig(
        n_agents=5, width=13, height=9, n_colors=8, gems_per_color=1, interior_walls=((4, 6),)
    )
    _, state, _ = make_state(config, steps=2)
    lines = render_ansi(config, state).split("\n")
    grid, legend = lines[: config.height], lines[config.height :]
    assert len(grid) == config.height and len(legend) == 1
    assert all(len(line) == config.width for line in grid)
    chars = np.array([list(line) for line in grid])
    walls = config.walls()
    assert (chars[walls] == "#").all()
    for (r, c), color in zip(state.gem_pos[0].tolist(), state.gem_color.tolist(), strict=True):
        assert chars[r, c] == "rgbypock"[color]
    for a, (r, c) in enumerate(state.agent_pos[0].tolist()):
        assert chars[r, c] == str(a)
        assert f"{a}:({r},{c})" in legend[0]
    assert legend[0].startswith(f"t={state.t} ")
    occupied = walls.copy()
    occupied[state.gem_pos[0, :, 0], state.gem_pos[0, :, 1]] = True
    occupied[state.agent_pos[0, :, 0], state.agent_pos[0, :, 1]] = True
    assert (chars[~occupied] == ".").all()


def test_ansi_stacks_and_base36_ids():
    config = WorldConfig(n_agents=40, width=13, height=13)
    _, state, _ = make_state(config, steps=0)
    chars = np.array(
        [list(line) for line in render_ansi(config, state).split("\n")[: config.height]]
    )
    for a in (10, 35, 36, 39):
        r, c = state.agent_pos[0, a]
        assert chars[r, c] == ("a" if a == 10 else "z" if a == 35 else "@")
    state.agent_pos[0, 3] = state.agent_pos[0, 4]
    chars = np.array(
        [list(line) for line in render_ansi(config, state).split("\n")[: config.height]]
    )
    assert chars[tuple(state.agent_pos[0, 4])] == "*"
    assert (chars == "*").sum() == 1


def test_save_animation_round_trip(tmp_path):
    config = NON_SQUARE
    core, state, rng = make_state(config, steps=0)
    frames = []
    for _ in range(5):
        frames.append(render_rgb(config, state, cell=16))
        core.step(state, rng.integers(0, 5, size=(1, config.n_agents)), rng)
    path = tmp_path / "deep" / "dir" / "episode.gif"
    save_animation(frames, path, fps=4)
    with Image.open(path) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == 5
        assert gif.size == (frames[0].shape[1], frames[0].shape[0])
        assert gif.info["duration"] == 250
    assert [p.name for p in path.parent.iterdir()] == ["episode.gif"]


def test_save_animation_rejects_other_extensions(tmp_path):
    frame = np.zeros((4, 4, 3), dtype=np.uint8)
    bad = tmp_path / "out" / "episode.png"
    with pytest.raises(ValueError, match=r"render path must end with \.gif, got '.*episode\.png'"):
        save_animation([frame], bad)
    assert not bad.parent.exists()
    with pytest.raises(ValueError, match="uint8"):
        save_animation([frame, np.zeros((4, 5, 3), dtype=np.uint8)], tmp_path / "a.gif")
    assert list(tmp_path.iterdir()) == []


def test_partial_view_shades_only_cells_outside_the_view():
    cell = 16
    config = WorldConfig(n_agents=6, width=13, height=9, view_radius=2)
    _, state, _ = make_state(config)
    grid_px = config.height * cell
    full = render_rgb(config, state, cell=cell)[:grid_px]
    seen = render_rgb(config, state, viewer=3, cell=cell)[:grid_px]
    r, c = state.agent_pos[0, 3]
    rows, cols = np.arange(config.height), np.arange(config.width)
    visible = (np.abs(rows - r) <= 2)[:, None] & (np.abs(cols - c) <= 2)[None, :]
    assert 0 < visible.sum() < visible.size
    changed = (
        (seen != full).any(-1).reshape(config.height, cell, config.width, cell).any(axis=(1, 3))
    )
    assert (changed == ~visible).all()
    assert seen[~np.repeat(np.repeat(visible, cell, 0), cell, 1)].mean() < full.mean()

    open_config = WorldConfig(n_agents=6, width=13, height=9)
    plain = render_rgb(open_config, state, cell=cell)
    assert (render_rgb(open_config, state, viewer=3, cell=cell) == plain).all()


def test_bad_indices_raise():
    config = WorldConfig(n_agents=3, view_radius=2)
    _, state, _ = make_state(config, steps=0)
    with pytest.raises(ValueError, match="viewer"):
        render_rgb(config, state, viewer=3)
    with pytest.raises(ValueError, match="world"):
        render_rgb(config, state, world=1)
    with pytest.raises(ValueError, match="cell"):
        render_rgb(config, state, cell=4)


def test_human_viewer_prints_text_without_an_interactive_backend(capsys):
    import matplotlib

    matplotlib.use("Agg", force=True)
    viewer = HumanViewer()
    viewer.show(np.zeros((8, 8, 3), dtype=np.uint8), "###\n#0#\n###")
    viewer.close()
    assert capsys.readouterr().out == "###\n#0#\n###\n"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_human_viewer_reuses_one_figure(monkeypatch, capsys):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from mirrorhall.envs import render

    monkeypatch.setattr(render, "_backend_is_interactive", lambda: True)
    plt.close("all")
    config = WorldConfig(n_agents=3)
    core, state, rng = make_state(config, steps=0)
    viewer = HumanViewer()
    first = render_rgb(config, state, cell=8)
    viewer.show(first, "unused")
    core.step(state, np.array([[4, 4, 4]]), rng)
    second = render_rgb(config, state, cell=8)
    viewer.show(second, "unused")
    assert len(plt.get_fignums()) == 1
    assert (np.asarray(viewer._image.get_array()) == second).all()
    viewer.close()
    assert plt.get_fignums() == []
    assert capsys.readouterr().out == ""
