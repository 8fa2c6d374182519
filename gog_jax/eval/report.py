"""Pictures of trajectories: the question image with every gaze box drawn, in turn order."""

import numpy as np
from PIL import Image, ImageDraw

# Gaze boxes in turn order: the first in orange, later ones in blue (the last is the one that counted).
_FIRST, _LATER = (255, 140, 0), (20, 90, 255)


def draw_trajectory(image: np.ndarray, boxes: list, scale: int = 2) -> np.ndarray:
    """uint8 [H, W, 3] + boxes (x1, y1, x2, y2 in original pixels) -> uint8 [H*scale, W*scale, 3]."""
    h, w = image.shape[:2]
    canvas = Image.fromarray(np.asarray(image, np.uint8)).resize((w * scale, h * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = (int(v) * scale for v in box)
        colour = _FIRST if i == 0 else _LATER
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=colour, width=2)
        draw.text((x1 + 3, y1 + 2), str(i + 1), fill=colour)
    return np.asarray(canvas)
