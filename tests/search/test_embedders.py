"""The default embedder: exact maths, determinism, and the retrieval properties the world needs."""

import time

import numpy as np
import pytest

from gog_jax.search.embedders import GlyphEmbedder, area_resize, embedder_name, trim_box
from tests.search.conftest import GLYPHS, draw_glyph, grid_scene, jitter_box, reference_image


@pytest.fixture(scope="module")
def gallery():
    """48 distinct glyphs, their reference images, and 240 jittered gaze crops from 30 scenes of
    6-9 glyphs (the synthetic world's setting)."""
    rng = np.random.default_rng(0)
    glyphs = [GLYPHS[i] for i in rng.choice(len(GLYPHS), 48, replace=False)]
    crops, targets, scenes, members = [], [], [], []
    for _ in range(30):
        pick = rng.choice(48, int(rng.integers(6, 10)), replace=False)
        scene, boxes = grid_scene(rng, [glyphs[i] for i in pick])
        scenes.append(scene)
        members.append(set(pick.tolist()))
        for i, box in zip(pick, boxes):
            x1, y1, x2, y2 = jitter_box(rng, box, 0.15, scene.shape[0])
            crops.append(scene[y1:y2, x1:x2])
            targets.append(int(i))
    return [reference_image(g) for g in glyphs], glyphs, crops, np.array(targets), scenes, members


def test_area_resize_is_exact_area_averaging():
    x = np.random.default_rng(0).random((12, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(area_resize(x, 12, 9), x, atol=1e-6)  # identity
    np.testing.assert_allclose(area_resize(x, 1, 1)[0, 0], x.mean((0, 1)), atol=1e-6)
    np.testing.assert_allclose(area_resize(x, 4, 3), x.reshape(4, 3, 3, 3, 3).mean((1, 3)), atol=1e-6)
    # fractional overlap: 3 -> 2 rows, the middle row split half and half
    y = np.array([[0.0], [3.0], [6.0]], np.float32)[:, :, None]
    np.testing.assert_allclose(area_resize(y, 2, 1)[:, 0, 0], [(0 + 1.5) / 1.5, (1.5 + 6) / 1.5], atol=1e-6)


def test_trim_box_drops_uniform_border_and_small_edge_marks():
    fg = np.zeros((40, 50), bool)
    fg[10:30, 15:35] = True  # 400 px glyph
    assert trim_box(fg, 0.03) == (10, 30, 15, 35)
    fg[0:3, 48:50] = True  # a 6 px mark in a corner (1.5% of the foreground)
    assert trim_box(fg, 0.03) == (10, 30, 15, 35)
    assert trim_box(fg, 0.0) == (0, 30, 15, 50)
    assert trim_box(np.zeros((7, 5), bool), 0.03) == (0, 7, 0, 5)


def test_trim_box_drops_a_neighbours_sliver_cut_by_the_edge_but_not_a_glyphs_own_part():
    fg = np.zeros((40, 50), bool)
    fg[10:30, 15:35] = True  # the glyph: 400 px
    fg[5:35, 0:2] = True  # a neighbour's sliver cut by the left edge: 60 px (13%), after a gap
    assert trim_box(fg, 0.0, cut_share=0.2) == (5, 35, 15, 35)  # gone from the columns
    assert trim_box(fg, 0.0, cut_share=0.1) == (5, 35, 0, 35)  # too big to be a sliver at 10%
    fg[:, :2] = False
    fg[3:6, 20:30] = True  # the glyph's own tip above a gap, not touching the edge: kept
    assert trim_box(fg, 0.0, cut_share=0.2) == (3, 30, 15, 35)


def test_unit_norm_deterministic_and_batch_independent(gallery):
    refs = gallery[0][:8]
    a, b = GlyphEmbedder()(refs), GlyphEmbedder()(np.stack(refs))
    assert a.shape == (8, 256) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(GlyphEmbedder()(refs[3:4]), a[3:4])
    assert GlyphEmbedder().name == GlyphEmbedder().name != GlyphEmbedder(seed=1).name
    assert embedder_name(GlyphEmbedder()) == GlyphEmbedder().name
    assert embedder_name(area_resize) == "gog_jax.search.embedders.area_resize"


def test_blank_image_embeds_to_zero_not_noise():
    v = GlyphEmbedder()(np.full((1, 30, 20, 3), 200, np.uint8))
    assert np.abs(v).max() == 0.0


def test_scale_and_position_invariance_of_one_glyph(gallery):
    """The same glyph, bigger and off-centre on a differently grey background, is its own top-1."""
    refs, glyphs = gallery[0], gallery[1]
    embed = GlyphEmbedder()
    index = embed(refs)
    canvases = []
    for i, glyph in enumerate(glyphs):
        canvas = np.full((168, 168, 3), 215, np.uint8)
        draw_glyph(canvas, glyph, (10 + i, 30, 10 + i + 110, 140))
        canvases.append(canvas)
    assert np.mean((embed(canvases) @ index.T).argmax(1) == np.arange(len(refs))) == 1.0


def test_jittered_crops_retrieve_their_glyph(gallery):
    refs, _, crops, targets, _, _ = gallery
    embed = GlyphEmbedder()
    top1 = (embed(crops) @ embed(refs).T).argmax(1)
    assert np.mean(top1 == targets) >= 0.95  # 0.97 measured


def test_trimming_is_what_makes_crops_work(gallery):
    refs, _, crops, targets, _, _ = gallery
    embed = GlyphEmbedder(trim=False)
    assert np.mean((embed(crops) @ embed(refs).T).argmax(1) == targets) < 0.7  # 0.46 measured


def test_cluttered_scene_embeds_as_a_mixture(gallery):
    """A whole scene of 6-9 glyphs resembles none of its glyphs the way a crop does, and its
    top-1 is one of its own glyphs at about chance (k/48 ~ 0.16), not reliably."""
    refs, _, crops, targets, scenes, members = gallery
    embed = GlyphEmbedder()
    index = embed(refs)
    crop_own = (embed(crops) @ index.T)[np.arange(len(targets)), targets]
    scene_sims = embed(scenes) @ index.T
    assert np.median(crop_own) > 0.85
    assert scene_sims.max(1).max() < 0.6
    assert np.mean([sims.argmax() in own for sims, own in zip(scene_sims, members)]) <= 0.35


def test_speed_thousands_per_second():
    images = np.random.default_rng(0).integers(0, 256, (1000, 64, 64, 3), np.uint8)
    embed = GlyphEmbedder()
    embed(images[:2])
    start = time.perf_counter()
    embed(images)
    # >=2,000/s on a free core; the bound leaves room for a CPU shared with other jobs.
    assert 1000 / (time.perf_counter() - start) > 500


def test_empty_batch():
    assert GlyphEmbedder(dim=32)([]).shape == (0, 32)
