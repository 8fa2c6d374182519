import numpy as np

from gog_jax.eval.report import draw_trajectory


def test_boxes_are_drawn_at_scale():
    image = np.full((168, 168, 3), 200, np.uint8)
    out = draw_trajectory(image, [(56, 0, 112, 56), (0, 0, 56, 56)], scale=2)
    assert out.shape == (336, 336, 3)
    assert tuple(out[60, 112]) == (255, 140, 0)  # left edge of the first box, in orange
    assert tuple(out[60, 0]) == (20, 90, 255)  # left edge of the second box, in blue
    assert tuple(out[200, 200]) == (200, 200, 200)  # untouched elsewhere
