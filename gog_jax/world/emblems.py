"""Procedural emblems: shape x colour x inner pattern, drawn with PIL at any size.

An emblem is the visual identity of one fictional entity. The three attributes are chosen so
that a small, deterministic image embedder tells emblems apart even from a jittered crop: the
colours are far apart in RGB, the shapes differ in silhouette, and the patterns differ in
orientation (bars), in ring structure or in spatial frequency (checker).
"""

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "star", "cross", "pentagon")
COLOURS = {
    "red": (214, 39, 40),
    "orange": (245, 130, 20),
    "yellow": (235, 200, 20),
    "green": (44, 160, 44),
    "teal": (23, 170, 170),
    "blue": (31, 90, 200),
    "purple": (130, 60, 180),
    "pink": (230, 110, 190),
}
PATTERNS = ("plain", "dot", "ring", "hbars", "vbars", "checker")

# Words a question or the oracle uses to describe an attribute (the KB never uses them).
SHAPE_WORDS = {
    "circle": "circular", "square": "square", "triangle": "triangular", "diamond": "diamond-shaped",
    "hexagon": "hexagonal", "star": "star-shaped", "cross": "cross-shaped", "pentagon": "pentagonal",
}
PATTERN_WORDS = {
    "plain": "plain", "dot": "dotted", "ring": "ringed", "hbars": "horizontally striped",
    "vbars": "vertically striped", "checker": "checkered",
}
BACKGROUND_RANGE = (200, 240)  # scene backgrounds are light greys in this range
_INK = (245, 245, 245)  # inner-pattern colour: near white, so patterns read on every colour


@dataclasses.dataclass(frozen=True)
class Emblem:
    shape: str
    colour: str
    pattern: str

    def describe(self) -> str:
        """The emblem's look in words, e.g. 'a red hexagonal emblem, vertically striped'."""
        return f"a {self.colour} {SHAPE_WORDS[self.shape]} emblem, {PATTERN_WORDS[self.pattern]}"


def _polygon(n: int, cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(rotation + 2 * math.pi * i / n),
             cy + r * math.sin(rotation + 2 * math.pi * i / n)) for i in range(n)]


def _silhouette(shape: str, size: int) -> Image.Image:
    """A binary ('L') mask [size, size] of the shape, filling most of the square."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    c, r = (size - 1) / 2, size / 2 - 0.5
    if shape == "circle":
        draw.ellipse((0, 0, size - 1, size - 1), fill=255)
    elif shape == "square":
        m = size * 0.08
        draw.rectangle((m, m, size - 1 - m, size - 1 - m), fill=255)
    elif shape == "triangle":
        draw.polygon([(c, 0), (size - 1, size - 1), (0, size - 1)], fill=255)
    elif shape == "diamond":
        draw.polygon(_polygon(4, c, c, r, -math.pi / 2), fill=255)
    elif shape == "hexagon":
        draw.polygon(_polygon(6, c, c, r, 0.0), fill=255)
    elif shape == "pentagon":
        draw.polygon(_polygon(5, c, c + r * 0.1, r, -math.pi / 2), fill=255)
    elif shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + math.pi * i / 5
            points.append((c + radius * math.cos(angle), c + radius * math.sin(angle)))
        draw.polygon(points, fill=255)
    elif shape == "cross":
        t = size * 0.18
        draw.rectangle((c - t, 0, c + t, size - 1), fill=255)
        draw.rectangle((0, c - t, size - 1, c + t), fill=255)
    else:
        raise ValueError(f"Unknown shape {shape!r}.")
    return mask


def _pattern(pattern: str, size: int) -> Image.Image:
    """A binary ('L') mask [size, size] of the inner pattern (where ink goes)."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    c = (size - 1) / 2
    if pattern == "plain":
        pass
    elif pattern == "dot":
        r = size * 0.14
        draw.ellipse((c - r, c - r, c + r, c + r), fill=255)
    elif pattern == "ring":
        r_out, width = size * 0.3, max(2, size // 14)
        draw.ellipse((c - r_out, c - r_out, c + r_out, c + r_out), outline=255, width=width)
    elif pattern in ("hbars", "vbars"):
        # Fractional positions: the same number of bars at every size, so patterns scale exactly.
        for k in range(5):
            lo, hi = round((k + 0.3) * size / 5), round((k + 0.7) * size / 5) - 1
            if pattern == "hbars":
                draw.rectangle((0, lo, size - 1, hi), fill=255)
            else:
                draw.rectangle((lo, 0, hi, size - 1), fill=255)
    elif pattern == "checker":
        edges = [round(k * size / 6) for k in range(7)]
        for i in range(6):
            for j in range(6):
                if (i + j) % 2 == 0:
                    draw.rectangle((edges[j], edges[i], edges[j + 1] - 1, edges[i + 1] - 1), fill=255)
    else:
        raise ValueError(f"Unknown pattern {pattern!r}.")
    return mask


def draw_emblem(canvas: Image.Image, emblem: Emblem, box: tuple[int, int, int, int]) -> None:
    """Draws `emblem` into the square `box` = (x1, y1, x2, y2) of an RGB `canvas`, in place."""
    x1, y1, x2, y2 = box
    size = min(x2 - x1, y2 - y1)
    if size < 4:
        raise ValueError(f"Emblem box {box} is too small.")
    silhouette = _silhouette(emblem.shape, size)
    # Patterns stay inside a shrunken silhouette so the outline keeps the emblem's colour.
    inner = _shrink(silhouette, 0.72)
    ink = Image.fromarray(np.minimum(np.asarray(_pattern(emblem.pattern, size)), np.asarray(inner)))
    canvas.paste(COLOURS[emblem.colour], (x1, y1), silhouette)
    canvas.paste(_INK, (x1, y1), ink)


def _shrink(mask: Image.Image, factor: float) -> Image.Image:
    """The mask scaled by `factor` about its centre (same canvas size)."""
    size = mask.size[0]
    small = max(1, round(size * factor))
    out = Image.new("L", (size, size), 0)
    offset = (size - small) // 2
    out.paste(mask.resize((small, small), Image.Resampling.NEAREST), (offset, offset))
    return out


def render_emblem(emblem: Emblem, size: int = 56, fill: float = 0.75,
                  background: tuple[int, int, int] = (220, 220, 220)) -> np.ndarray:
    """The emblem centred on a plain background: the index's reference image, uint8 [size, size, 3]."""
    canvas = Image.new("RGB", (size, size), background)
    side = round(size * fill)
    offset = (size - side) // 2
    draw_emblem(canvas, emblem, (offset, offset, offset + side, offset + side))
    return np.asarray(canvas)
