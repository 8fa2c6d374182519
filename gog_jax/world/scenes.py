"""Scenes: emblems placed on a light background among grey clutter, rendered from a small spec.

Two layouts cover the three question kinds:
- `single`: one dominant emblem (about 60-75% of the side) with a few small clutter marks;
  a whole-image search sees mostly that emblem, so a glance retrieves its entity.
- `grid`: a 3x3 grid of 56-px cells on a 168-px scene, 6-9 of them holding an emblem and the
  rest a clutter mark; a whole-image search sees a mixture, so only a crop of one cell
  (about 56x56) retrieves that cell's entity.

A scene is stored as its spec (JSON-able) and rendered on demand, so a world of thousands of
questions costs kilobytes until images are needed.
"""

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

from gog_jax.world.emblems import BACKGROUND_RANGE, Emblem, draw_emblem

GRID = 3
ROW_WORDS = ("top", "middle", "bottom")
COL_WORDS = ("left", "centre", "right")


@dataclasses.dataclass(frozen=True)
class Placement:
    """One emblem in a scene: which entity, where (x1, y1, x2, y2 in scene pixels), which cell."""
    entity_id: str
    emblem: Emblem
    box: tuple[int, int, int, int]
    cell: tuple[int, int] | None = None  # (row, col) in the grid layout


@dataclasses.dataclass(frozen=True)
class Clutter:
    """A small grey mark: a polygon of `points` in scene pixels, filled with `grey`."""
    points: tuple[tuple[int, int], ...]
    grey: int


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    size: int
    layout: str  # "single" | "grid"
    background: int  # grey level of the top-left corner
    gradient: tuple[float, float]  # grey change per pixel along (x, y)
    placements: tuple[Placement, ...]
    clutter: tuple[Clutter, ...]


def position_phrase(cell: tuple[int, int]) -> str:
    """(row, col) -> 'top-left', 'middle-centre', ... (the words a question uses)."""
    return f"{ROW_WORDS[cell[0]]}-{COL_WORDS[cell[1]]}"


def cell_box(cell: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    """The grid cell's box in scene pixels: what an ideal gaze crops."""
    step = size // GRID
    r, c = cell
    return (c * step, r * step, (c + 1) * step, (r + 1) * step)


def _clutter_mark(rng: np.random.Generator, cx: float, cy: float, radius: float) -> Clutter:
    n = int(rng.integers(3, 7))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = rng.uniform(0.4, 1.0, n) * radius
    points = tuple((int(round(cx + r * math.cos(a))), int(round(cy + r * math.sin(a))))
                   for a, r in zip(angles, radii))
    return Clutter(points=points, grey=int(rng.integers(90, 170)))


def _background(rng: np.random.Generator) -> tuple[int, tuple[float, float]]:
    level = int(rng.integers(BACKGROUND_RANGE[0] + 8, BACKGROUND_RANGE[1] - 8))
    return level, (float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05)))


def single_layout(rng: np.random.Generator, entity_id: str, emblem: Emblem, size: int = 168,
                  fill: tuple[float, float] = (0.6, 0.75), n_clutter: tuple[int, int] = (2, 4)) -> SceneSpec:
    """One dominant emblem at a random position, small clutter marks in the free margin."""
    side = int(round(size * rng.uniform(*fill)))
    x1 = int(rng.integers(0, size - side + 1))
    y1 = int(rng.integers(0, size - side + 1))
    placement = Placement(entity_id, emblem, (x1, y1, x1 + side, y1 + side))
    clutter = []
    for _ in range(int(rng.integers(n_clutter[0], n_clutter[1] + 1))):
        for _attempt in range(20):
            radius = rng.uniform(4, 9)
            cx, cy = rng.uniform(radius, size - radius, 2)
            # Keep marks off the emblem so its silhouette stays whole.
            if not (x1 - radius < cx < x1 + side + radius and y1 - radius < cy < y1 + side + radius):
                clutter.append(_clutter_mark(rng, cx, cy, radius))
                break
    background, gradient = _background(rng)
    return SceneSpec(size, "single", background, gradient, (placement,), tuple(clutter))


def grid_layout(rng: np.random.Generator, items: list[tuple[str, Emblem]], cells: list[tuple[int, int]],
                size: int = 168, fill: tuple[float, float] = (0.68, 0.8), max_shift: int = 3) -> SceneSpec:
    """`items[i]` drawn in `cells[i]` of a 3x3 grid; every free cell gets a clutter mark."""
    if len(items) != len(cells) or len(set(cells)) != len(cells):
        raise ValueError("Need one distinct cell per item.")
    step = size // GRID
    placements = []
    for (entity_id, emblem), (r, c) in zip(items, cells):
        side = int(round(step * rng.uniform(*fill)))
        room = (step - side) // 2
        shift = min(max_shift, room)
        dx, dy = (int(v) for v in rng.integers(-shift, shift + 1, 2))
        x1, y1 = c * step + room + dx, r * step + room + dy
        placements.append(Placement(entity_id, emblem, (x1, y1, x1 + side, y1 + side), (r, c)))
    clutter = []
    for r in range(GRID):
        for c in range(GRID):
            if (r, c) not in cells:
                cx, cy = c * step + step / 2, r * step + step / 2
                clutter.append(_clutter_mark(rng, cx + rng.uniform(-8, 8), cy + rng.uniform(-8, 8),
                                             rng.uniform(6, 12)))
    background, gradient = _background(rng)
    return SceneSpec(size, "grid", background, gradient, tuple(placements), tuple(clutter))


def render_scene(spec: SceneSpec) -> np.ndarray:
    """The scene as uint8 [size, size, 3]; a pure function of the spec."""
    ys, xs = np.mgrid[0:spec.size, 0:spec.size].astype(np.float32)
    grey = spec.background + spec.gradient[0] * xs + spec.gradient[1] * ys
    grey = np.clip(np.round(grey), 0, 255).astype(np.uint8)
    canvas = Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))
    draw = ImageDraw.Draw(canvas)
    for mark in spec.clutter:
        draw.polygon(mark.points, fill=(mark.grey,) * 3)
    for placement in spec.placements:
        draw_emblem(canvas, placement.emblem, placement.box)
    return np.asarray(canvas)


def spec_to_json(spec: SceneSpec) -> dict:
    return dataclasses.asdict(spec)


def spec_from_json(data: dict) -> SceneSpec:
    placements = tuple(
        Placement(p["entity_id"], Emblem(**p["emblem"]), tuple(p["box"]),
                  tuple(p["cell"]) if p["cell"] is not None else None)
        for p in data["placements"])
    clutter = tuple(Clutter(tuple(tuple(pt) for pt in m["points"]), m["grey"]) for m in data["clutter"])
    return SceneSpec(data["size"], data["layout"], data["background"], tuple(data["gradient"]),
                     placements, clutter)
