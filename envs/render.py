"""Pictures of one world: RGB frames, ANSI text, animated GIFs and a live viewer.

``render_rgb`` draws the grid with numpy (floor, walls, gems, view shading) and the agents with
PIL (circles carrying their ids, a wedge for the last move). ``render_ansi`` gives the same
world as text. Both read one world ``world`` of a batched ``WorldState``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mirrorhall.envs.core import COLOR_NAMES, MOVES, NO_ACTION, WorldConfig, WorldState
from mirrorhall.files import atomic_write

# (8, 3) gem colours in COLOR_NAMES order.
GEM_RGB = np.array(
    [
        [215, 38, 38],  # red
        [34, 160, 60],  # green
        [38, 90, 225],  # blue
        [240, 196, 20],  # yellow
        [140, 60, 190],  # purple
        [245, 128, 20],  # orange
        [20, 195, 210],  # cyan
        [245, 120, 185],  # pink
    ],
    dtype=np.uint8,
)
GEM_LETTERS = "".join("k" if name == "pink" else name[0] for name in COLOR_NAMES)
"""ANSI letter of each colour: the first letter of its name, 'k' for pink."""

FLOOR_RGB = (238, 235, 226)
GRID_RGB = (212, 207, 194)
WALL_RGB = (72, 72, 78)
FOOTER_RGB = (26, 26, 30)
FOOTER_TEXT_RGB = (235, 235, 235)
TEXT_RGB = (16, 16, 16)
EMPHASIS_RGB = (250, 196, 60)
"""Background of an emphasised caption line (a prompt switch)."""
WHITE_RGB = (255, 255, 255)
SHADE_RGB = (18, 20, 34)
SHADE_KEEP = 0.45
"""Fraction of the original pixel kept in a cell the viewer cannot see."""

AGENT_RGB = np.array(
    [
        [110, 95, 0],  # olive
        [120, 10, 50],  # wine
        [105, 145, 215],  # cornflower
        [210, 125, 105],  # terracotta
        [0, 75, 30],  # forest
        [65, 50, 115],  # indigo
        [115, 45, 0],  # chestnut
        [125, 150, 100],  # sage
        [160, 135, 160],  # heather
        [0, 85, 130],  # petrol
        [130, 100, 70],  # umber
        [0, 95, 90],  # deep teal
        [110, 20, 90],  # plum
        [130, 75, 90],  # mauve
        [185, 140, 75],  # ochre
        [65, 65, 20],  # moss
    ],
    dtype=np.uint8,
)
"""(16, 3) outline colours of agents 0-15: muted tones chosen far (CIE76 distance >= 40) from every
gem colour (``GEM_RGB``, all vivid) and from each other (>= 23), each id as far as possible
from those before it, so that neighbouring ids differ most. Agents are circles, gems diamonds."""
AGENT_GROUP_SHADE = (1.0, 0.7, 0.85, 0.55)
"""Outline brightness of ids 0-15, 16-31, 32-47, 48-63 (repeating): ids 16 apart share a tone."""
AGENT_SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyz"
STACK_SLOTS = 4
"""Agents shown by id in a shared cell; with more, the first three and a '+k' tile."""

_FONT_FILES = ("DejaVuSans-Bold.ttf", "Arial Bold.ttf", "arialbd.ttf")


def footer_height(cell: int) -> int:
    """Height in pixels of the strip under the grid that shows the step number."""
    return max(14, cell // 2)


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """A bold sans font of ``size`` pixels; PIL's default font when none is installed."""
    for name in _FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError, ImportError):
        return ImageFont.load_default()


@lru_cache(maxsize=4096)
def _fitted_font(text: str, max_w: float, max_h: float):
    """The largest font (at most ``max_h`` px) in which ``text`` fits ``max_w`` x ``max_h``."""
    size = max(6, int(max_h))
    while True:
        font = _font(size)
        x0, y0, x1, y1 = font.getbbox(text)
        if size <= 6 or (x1 - x0 <= max_w and y1 - y0 <= max_h):
            return font
        size -= 1


def _draw_centered(draw: ImageDraw.ImageDraw, xy, text: str, font, fill) -> None:
    """Draw ``text`` with its ink box centred on ``xy`` (works for bitmap and FreeType fonts)."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    draw.text((xy[0] - (x0 + x1) / 2, xy[1] - (y0 + y1) / 2), text, font=font, fill=fill)


def agent_colors(n_agents: int) -> tuple[np.ndarray, np.ndarray]:
    """(fill (N, 3), outline (N, 3)) uint8: a light fill and a strong outline per agent.

    Ids 0-15 take the sixteen tones of ``AGENT_RGB``, none of them a gem colour; each further
    group of sixteen repeats them, darker (``AGENT_GROUP_SHADE``). The fill is the outline's tone
    mixed with white, light enough for the black id on it.
    """
    i = np.arange(n_agents)
    shade = np.asarray(AGENT_GROUP_SHADE)[(i // len(AGENT_RGB)) % len(AGENT_GROUP_SHADE)]  # (N,)
    line = np.round(AGENT_RGB[i % len(AGENT_RGB)] * shade[:, None]).astype(np.uint8)  # (N, 3)
    fill = np.round(255 - (255 - AGENT_RGB[i % len(AGENT_RGB)].astype(float)) * (0.45 + 0.07 * (shade < 1)[:, None]))
    return fill.astype(np.uint8), line


def view_mask(config: WorldConfig, state: WorldState, world: int, viewer: int | None) -> np.ndarray:
    """(H, W) bool: cells ``viewer`` sees in ``world``; all True for no viewer or full view."""
    h, w = config.height, config.width
    if viewer is None or config.view_radius is None:
        return np.ones((h, w), dtype=bool)
    r, c = state.agent_pos[world, viewer]
    rows = np.abs(np.arange(h) - r) <= config.view_radius  # (H,)
    cols = np.abs(np.arange(w) - c) <= config.view_radius  # (W,)
    return rows[:, None] & cols[None, :]


def _check_indices(config: WorldConfig, state: WorldState, world: int, viewer: int | None) -> None:
    if not 0 <= world < state.batch_size:
        raise ValueError(f"world must be in 0..{state.batch_size - 1}, got {world}")
    if viewer is not None and not 0 <= viewer < config.n_agents:
        raise ValueError(f"viewer must be None or in 0..{config.n_agents - 1}, got {viewer}")


def _grid_pixels(config: WorldConfig, state: WorldState, world: int, cell: int) -> np.ndarray:
    """(H*cell, W*cell, 3) uint8: floor with cell lines, walls and gem diamonds."""
    h, w = config.height, config.width
    img = np.empty((h, cell, w, cell, 3), dtype=np.uint8)
    img[:] = FLOOR_RGB
    img[:, 0] = GRID_RGB
    img[:, :, :, 0] = GRID_RGB
    img = np.where(config.walls()[:, None, :, None, None], np.asarray(WALL_RGB, np.uint8), img)

    centre = (cell - 1) / 2
    yy, xx = np.mgrid[0:cell, 0:cell]
    dist = np.abs(yy - centre) + np.abs(xx - centre)  # (cell, cell) Manhattan from the centre
    size = 0.42 * cell
    inner = dist <= size - max(1.5, cell / 20)  # (cell, cell)
    rim = (dist <= size) & ~inner  # (cell, cell)

    color = np.full((h, w), -1, dtype=np.int64)  # (H, W) gem colour index, -1 for none
    gp = state.gem_pos[world]
    color[gp[:, 0], gp[:, 1]] = state.gem_color
    has_gem = color >= 0  # (H, W)
    fill = GEM_RGB[np.maximum(color, 0)]  # (H, W, 3)
    edge = (fill * 0.55).astype(np.uint8)  # (H, W, 3)
    gem = has_gem[:, None, :, None, None]
    img = np.where(gem & inner[None, :, None, :, None], fill[:, None, :, None, :], img)
    img = np.where(gem & rim[None, :, None, :, None], edge[:, None, :, None, :], img)
    return img.reshape(h * cell, w * cell, 3)


def _draw_agent(
    draw, cx: float, cy: float, half: float, ident: str, fill, line, action: int
) -> None:
    """A lone agent: outlined circle with its id, a wedge along its last move, a dot for stay."""
    radius = 0.72 * half
    width = max(1, round(half / 7))
    draw.ellipse(
        (cx - radius, cy - radius, cx + radius, cy + radius), fill=fill, outline=line, width=width
    )
    _draw_centered(
        draw, (cx, cy), ident, _fitted_font(ident, 1.55 * radius, 1.1 * radius), TEXT_RGB
    )
    if action == 0:
        d = max(1.5, 0.16 * half)
        px, py = cx + 0.78 * half, cy + 0.78 * half
        draw.ellipse((px - d, py - d, px + d, py + d), fill=line)
    elif action > 0:
        dy, dx = (float(v) for v in MOVES[action])
        tip, base = half - 0.5, radius
        spread = max(2.0, 0.45 * (tip - base) + 0.2 * radius)
        bx, by = cx + dx * base, cy + dy * base
        draw.polygon(
            [
                (cx + dx * tip, cy + dy * tip),
                (bx - dy * spread, by + dx * spread),
                (bx + dy * spread, by - dx * spread),
            ],
            fill=line,
        )


def _stack_slots(
    x0: float, y0: float, cell: int, k: int
) -> list[tuple[float, float, float, float]]:
    """Boxes (x0, y0, x1, y1) for ``k`` <= 4 agents sharing the cell at x0, y0: halves or quarters."""
    h = cell / 2
    if k == 2:
        return [(x0, y0, x0 + cell, y0 + h), (x0, y0 + h, x0 + cell, y0 + cell)]
    quarters = [(x0, y0), (x0 + h, y0), (x0, y0 + h), (x0 + h, y0 + h)]
    return [(x, y, x + h, y + h) for x, y in quarters[:k]]


def _draw_stack(draw, x0: float, y0: float, cell: int, agents, fill, line, actions) -> None:
    """Agents sharing a cell: one tile each with its id; a thick side marks the last move.

    Up to ``STACK_SLOTS`` agents get a tile; with more, the last tile reads "+k" for the rest.
    """
    shown = list(agents) if len(agents) <= STACK_SLOTS else list(agents[: STACK_SLOTS - 1])
    slots = _stack_slots(x0, y0, cell, min(len(agents), STACK_SLOTS))
    bar = max(2, round(cell / 16))
    for i, (sx0, sy0, sx1, sy1) in enumerate(slots):
        box = [sx0 + 1, sy0 + 1, sx1 - 1, sy1 - 1]
        if i < len(shown):
            a = shown[i]
            ident, bg, edge, action = str(int(a)), _rgb(fill[a]), _rgb(line[a]), int(actions[a])
        else:
            ident, bg, edge, action = f"+{len(agents) - len(shown)}", WHITE_RGB, TEXT_RGB, NO_ACTION
        draw.rounded_rectangle(box, radius=max(1, cell // 10), fill=bg, outline=edge, width=1)
        text = [box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1]
        if action > 0:
            dy, dx = (int(v) for v in MOVES[action])
            side = list(box)
            k = 0 if dx else 1
            if dx + dy < 0:
                side[k + 2] = box[k] + bar
                text[k] = box[k] + bar + 1
            else:
                side[k] = box[k + 2] - bar
                text[k + 2] = box[k + 2] - bar - 1
            draw.rectangle(side, fill=edge)
        font = _fitted_font(ident, text[2] - text[0], text[3] - text[1])
        _draw_centered(
            draw, ((text[0] + text[2]) / 2, (text[1] + text[3]) / 2), ident, font, TEXT_RGB
        )


def _rgb(color) -> tuple[int, int, int]:
    return tuple(int(v) for v in color)


def render_rgb(
    config: WorldConfig,
    state: WorldState,
    world: int = 0,
    viewer: int | None = None,
    cell: int = 32,
    caption: Sequence[str | tuple[str, bool]] = (),
    events: Sequence = (),
) -> np.ndarray:
    """Draw world ``world`` as an RGB image.

    Returns uint8 of shape ``(config.height * cell + (1 + len(caption)) * footer_height(cell),
    config.width * cell, 3)`` where ``footer_height(cell) = max(14, cell // 2)``; the footer shows
    the step ``t``, then one row per caption line (``act`` names each model-driven agent and its
    current prompt there). A line given as ``(text, True)`` is emphasised: dark text on amber
    (``act`` marks a prompt switch so).

    Floor is light with thin cell lines, walls dark grey, gems diamonds in their colour
    (``GEM_RGB``). Agents are circles with their id, filled and outlined in a hue of their own
    (``agent_colors``); a wedge on the circle's edge points along the last move and a dot beside it
    marks "stay". Agents sharing a cell get one tile each (two halves or four quarters of the
    cell, with a thick side for the last move; with more than four, three tiles and a "+k" tile).
    With ``viewer`` set and ``config.view_radius`` not None, the cells that agent cannot see are
    darkened. ``events`` (a schedule of ``WorldEvent``): the events of this frame's step (those
    whose ``step`` is ``state.t``) are marked: an amber frame around each cell they touched and an
    emphasised caption line naming them (``swap red gem 0 <-> blue gem 4``); with a non-empty
    schedule every frame has that line (empty at steps without events), so frames keep one size.
    """
    _check_indices(config, state, world, viewer)
    due = [ev for ev in events if ev.step == state.t]
    if events:  # one line for the events, empty at other steps: every frame of a schedule has one size
        caption = [*caption, ("; ".join(ev.describe(config) for ev in due), True) if due else ""]
    if isinstance(cell, bool) or not isinstance(cell, (int, np.integer)) or cell < 8:
        raise ValueError(f"cell must be an integer >= 8, got {cell!r}")
    cell = int(cell)
    lines = [(c, False) if isinstance(c, str) else (str(c[0]), bool(c[1])) for c in caption]
    h, w = config.height, config.width
    foot = footer_height(cell)
    frame = np.empty((h * cell + foot * (1 + len(lines)), w * cell, 3), dtype=np.uint8)  # (H*cell + footer, W*cell, 3)
    frame[: h * cell] = _grid_pixels(config, state, world, cell)
    frame[h * cell :] = FOOTER_RGB

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    fill, line = agent_colors(config.n_agents)
    pos = state.agent_pos[world]  # (N, 2)
    actions = state.last_action[world]  # (N,)
    flat = pos[:, 0] * w + pos[:, 1]  # (N,)
    order = np.lexsort((np.arange(config.n_agents), flat))  # by cell, then id
    cells, starts = np.unique(flat[order], return_index=True)
    for c, group in zip(cells, np.split(order, starts[1:]), strict=True):
        row, col = divmod(int(c), w)
        if len(group) == 1:
            a = group[0]
            half = cell / 2
            _draw_agent(
                draw,
                col * cell + half,
                row * cell + half,
                half,
                str(int(a)),
                _rgb(fill[a]),
                _rgb(line[a]),
                int(actions[a]),
            )
        else:
            _draw_stack(draw, col * cell, row * cell, cell, group, fill, line, actions)

    for ev in due:  # an amber frame around every cell the event touched
        for r, c in ev.cells(state, world):
            draw.rectangle((c * cell, r * cell, (c + 1) * cell - 1, (r + 1) * cell - 1),
                           outline=EMPHASIS_RGB, width=max(2, cell // 10))
    label = f"t={state.t}"
    if viewer is not None and config.view_radius is not None:
        label += f"   view of agent {viewer} (radius {config.view_radius})"
    for row, (text, emphasised) in enumerate([(label, False), *lines]):
        top = h * cell + row * foot
        if emphasised:
            draw.rectangle((0, top + 1, w * cell - 1, top + foot - 2), fill=EMPHASIS_RGB)
        font = _fitted_font(text, w * cell - 8, foot - 4)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        draw.text((4 - x0, top + (foot - (y0 + y1)) / 2), text, font=font,
                  fill=TEXT_RGB if emphasised else FOOTER_TEXT_RGB)
    frame = np.asarray(image).copy()  # (H*cell + foot, W*cell, 3)

    hidden = ~view_mask(config, state, world, viewer)  # (H, W)
    if hidden.any():
        grid = frame[: h * cell].reshape(h, cell, w, cell, 3)
        dark = grid * SHADE_KEEP + np.asarray(SHADE_RGB) * (1 - SHADE_KEEP)
        shaded = np.where(hidden[:, None, :, None, None], np.round(dark), grid)
        frame[: h * cell] = shaded.astype(np.uint8).reshape(h * cell, w * cell, 3)
    return frame


def agent_symbol(agent: int) -> str:
    """One character for an agent in ANSI frames: its id in base 36, '@' from 36 on."""
    return AGENT_SYMBOLS[agent] if agent < len(AGENT_SYMBOLS) else "@"


def render_ansi(config: WorldConfig, state: WorldState, world: int = 0) -> str:
    """World ``world`` as text: ``config.height`` lines of ``config.width`` characters, then a legend.

    ``#`` wall, ``.`` floor, a gem as its colour letter (``GEM_LETTERS``: r g b y p o c k), an agent
    as ``agent_symbol(id)`` and a cell holding several agents as ``*``. The legend line gives the
    step and every agent's (row, col). Note that base-36 ids 11 and up use letters, some of which are
    also gem letters; the legend disambiguates.
    """
    _check_indices(config, state, world, None)
    h, w = config.height, config.width
    chars = np.where(config.walls(), "#", ".").astype("<U1")  # (H, W)
    gp = state.gem_pos[world]
    chars[gp[:, 0], gp[:, 1]] = np.array(list(GEM_LETTERS))[state.gem_color]
    pos = state.agent_pos[world]  # (N, 2)
    count = np.zeros((h, w), dtype=np.int64)
    np.add.at(count, (pos[:, 0], pos[:, 1]), 1)
    symbols = np.array([agent_symbol(i) for i in range(config.n_agents)])
    chars[pos[:, 0], pos[:, 1]] = symbols
    chars[count > 1] = "*"
    lines = ["".join(row) for row in chars]
    legend = f"t={state.t} " + " ".join(f"{i}:({r},{c})" for i, (r, c) in enumerate(pos.tolist()))
    return "\n".join([*lines, legend])


def save_animation(frames: list[np.ndarray], path: str | os.PathLike, fps: float = 5) -> Path:
    """Write uint8 RGB frames (all the same (H, W, 3) shape) to an animated GIF at ``path``.

    Parent directories are created and the file is written atomically (``mirrorhall.files.atomic_write``). PIL merges consecutive identical frames into one longer
    frame. Returns the path written.
    """
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"render path must end with .gif, got '{path}'")
    if not frames:
        raise ValueError("save_animation needs at least one frame")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    arrays = [np.asarray(f) for f in frames]
    shape = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or a.shape != shape:
            raise ValueError(
                f"frame {i} must be uint8 of shape {shape} (H, W, 3), got {a.dtype} {a.shape}"
            )
    images = [Image.fromarray(a) for a in arrays]
    gif = io.BytesIO()
    images[0].save(
        gif,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
    )
    atomic_write(path, gif.getvalue())
    return path


def _backend_is_interactive() -> bool:
    """Whether matplotlib's current backend opens windows."""
    import matplotlib

    backend = matplotlib.get_backend().lower()
    try:
        from matplotlib.backends import BackendFilter, backend_registry

        names = backend_registry.list_builtin(BackendFilter.INTERACTIVE)
    except ImportError:
        from matplotlib import rcsetup

        names = rcsetup.interactive_bk
    return backend in {n.lower() for n in names}


class HumanViewer:
    """Shows frames in one matplotlib window, or prints their text where no window can open."""

    def __init__(self, title: str = "mirrorhall"):
        self.title = title
        self._fig = None
        self._image = None

    def show(self, frame: np.ndarray, text: str) -> None:
        """Display ``frame`` (interactive backend) or print ``text`` (any other backend)."""
        if not _backend_is_interactive():
            print(text, flush=True)
            return
        import matplotlib.pyplot as plt

        alive = self._fig is not None and plt.fignum_exists(self._fig.number)
        if not alive or self._image.get_array().shape != frame.shape:
            if alive:
                plt.close(self._fig)
            self._fig, ax = plt.subplots(num=self.title, clear=True)
            ax.set_axis_off()
            self._image = ax.imshow(frame, interpolation="nearest")
            self._fig.tight_layout()
        else:
            self._image.set_data(frame)
        plt.pause(0.001)

    def close(self) -> None:
        """Close the window if one is open."""
        if self._fig is not None:
            import matplotlib.pyplot as plt

            plt.close(self._fig)
        self._fig = None
        self._image = None
