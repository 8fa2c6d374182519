"""Our Flax Qwen3-VL is the same function as transformers' on random tiny configs (fp32, 1e-4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from gog_jax.models import qwen3_vl
from gog_jax.models.qwen3_vl import rope
from tests.models import hf_reference as ref

MAX_DIFFS: dict[str, float] = {}  # test -> max |logit diff|, printed at the end (pytest -s)


@pytest.fixture(scope="module")
def pair():
    hf = ref.hf_model(ref.qwen3_config())
    yield hf, ref.ours_from_hf(hf)
    print("\nmax |logit diff| vs transformers:", {k: f"{v:.2e}" for k, v in MAX_DIFFS.items()})


@jax.jit
def _encode(model, pixels, meta):
    return model.encode_images(pixels, meta)


@jax.jit
def _prefill(model, tokens, positions, features, cache, start):
    """One chunk into the cache; the last position's logits."""
    hidden, cache = model.forward(tokens, positions, image_features=features, cache=cache, cache_index=start)
    return model.logits(hidden[:, -1]), cache


def _pixels(rng, grids, extra: int = 0):
    return ref.pixels(rng, grids, 3 * 2 * 16 * 16, extra)


def _record(name: str, diff: float) -> None:
    MAX_DIFFS[name] = max(MAX_DIFFS.get(name, 0.0), diff)


def _assert_close(name, ours, theirs):
    _record(name, ref.assert_close(ours, theirs))


def test_text_only(pair):
    hf, ours = pair
    ids = np.random.default_rng(0).integers(10, 256, (3, 17))
    _assert_close("text", ours(ids), ref.hf_logits(hf, ids))


def test_one_image_with_multimodal_positions_deepstack_and_the_image_matters(pair):
    """8 x 12 patches, resampled from the 8 x 8 grid of learned positions."""
    hf, ours = pair
    inputs, logits, diff = ref.check_images(hf, ours, np.random.default_rng(1), [[1, 8, 12]], [5, 7])
    _record("one image", diff)
    # transformers took the M-RoPE path (it sets rope_deltas only there), with our positions
    _, deltas = rope.get_rope_index(inputs["input_ids"], inputs["image_grid_thw"], None, ref.IMAGE_TOKEN, 2)
    assert deltas[0] != 0 and hf.model.rope_deltas.reshape(-1).tolist() == deltas.tolist()
    other = ours(**{**inputs, "pixel_values": inputs["pixel_values"] + 1.0})
    assert np.abs(np.asarray(other)[0, -1] - logits[0, -1]).max() > 1e-3
    ablated = nnx.clone(ours)  # DeepStack rows zeroed: the logits move, so they are used
    for merger in ablated.visual.deepstack_merger_list:
        merger.linear_fc2.kernel[...] = jnp.zeros_like(merger.linear_fc2.kernel[...])
        merger.linear_fc2.bias[...] = jnp.zeros_like(merger.linear_fc2.bias[...])
    assert np.abs(np.asarray(ablated(**inputs))[0, -1] - logits[0, -1]).max() > 1e-3


def test_three_images_of_different_sizes(pair):
    _record("three images", ref.check_images(*pair, np.random.default_rng(2), [[1, 4, 4], [1, 10, 6], [1, 6, 14]],
                                             [3, 2, 4, 5])[2])


def test_batch_with_left_and_right_padding(pair):
    _record("padded batch", ref.check_padded_batch(*pair, np.random.default_rng(3)))


def test_prefill_in_two_chunks_with_a_kv_cache_equals_one_forward(pair):
    """A text chunk, then a chunk holding an image, whose features are padded past its image-pad
    tokens (a bucket). Both chunks get the features (the first has no image-pad to take them), so
    one program serves both."""
    hf, ours = pair
    cfg = ours.config
    rng = np.random.default_rng(4)
    grids = np.array([[1, 6, 8]])
    second = ref.image_sequence(rng, grids, [2, 4])
    seq = np.concatenate([rng.integers(10, 256, len(second)), second])
    cut = len(second)
    pixels = _pixels(rng, grids, extra=8)  # 8 padding patches: two extra feature rows
    features = _encode(ours, pixels, qwen3_vl.vision_metadata(grids, cfg.vision, num_patches=len(pixels)))
    assert features.shape == (1 + len(cfg.vision.deepstack_visual_indexes), 14, cfg.text.hidden_size)
    first_pos, state = rope.chunk_positions(seq[:cut], [], rope.RopeState(), cfg.image_token_id, 2)
    second_pos, _ = rope.chunk_positions(seq[cut:], list(grids), state, cfg.image_token_id, 2)
    cache = qwen3_vl.KVCache.zeros(cfg.text, batch=1, max_len=48)
    _, cache = _prefill(ours, jnp.asarray(seq[None, :cut]), jnp.asarray(first_pos[:, None]), features, cache,
                        jnp.array([0]))
    chunked, _ = _prefill(ours, jnp.asarray(seq[None, cut:]), jnp.asarray(second_pos[:, None]), features, cache,
                          jnp.array([cut]))
    chunked = np.asarray(chunked[0])
    full = np.asarray(ours(seq[None], pixel_values=pixels[:48], image_grid_thw=grids))[0, -1]
    np.testing.assert_allclose(chunked, full, atol=ref.TOL, rtol=0)
    _assert_close("kv cache, two chunks", chunked,
                  ref.hf_logits(hf, seq[None], pixel_values=pixels[:48], image_grid_thw=grids)[0, -1])


@pytest.mark.parametrize("tie,attention_bias,deepstack", [(True, True, ()), (False, False, (2, 0))])
def test_vision_tower_and_config_variants(tie, attention_bias, deepstack):
    """Tied head, attention biases, no DeepStack, and DeepStack indexes out of order."""
    hf = ref.hf_model(ref.qwen3_config(tie=tie, attention_bias=attention_bias, deepstack=deepstack), seed=5)
    ours = ref.ours_from_hf(hf)
    assert (ours.lm_head is None) == tie
    rng = np.random.default_rng(5)
    grids = np.array([[1, 10, 14], [1, 4, 6]])
    pixels = _pixels(rng, grids)
    features = _encode(ours, pixels, qwen3_vl.vision_metadata(grids, ours.config.vision))
    with torch.no_grad():
        theirs = hf.model.visual(torch.as_tensor(pixels), grid_thw=torch.as_tensor(grids))
    _assert_close("vision features", features, torch.stack([theirs.pooler_output, *theirs.deepstack_features]))
    ids = ref.image_sequence(rng, grids, [2, 3, 2])[None]
    _assert_close("config variants", ours(ids, pixel_values=pixels, image_grid_thw=grids),
                  ref.hf_logits(hf, ids, pixel_values=pixels, image_grid_thw=grids))


def test_bfloat16_within_2e2_of_float32(pair):
    ref.check_bfloat16(*pair, np.random.default_rng(6))
