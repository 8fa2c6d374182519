"""Random tiny transformers Qwen2.5-VL / Qwen3-VL models and the same weights in our Flax models (tests only)."""

import json
import os

import numpy as np
import torch
from flax import nnx
from safetensors.numpy import load_file, save_file
from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen3VLConfig,
                          Qwen3VLForConditionalGeneration)

from gog_jax.models import qwen2_5_vl, qwen3_vl

IMAGE_TOKEN = 5
VISION_START, VISION_END = 3, 4
TOL = 1e-4  # max |logit diff| against transformers in float32


def hf_config(*, tie: bool = False, window_size: int = 56, fullatt=(1,), depth: int = 2,
              vocab: int = 256) -> Qwen2_5_VLConfig:
    return Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                         max_position_embeddings=1024, tie_word_embeddings=tie,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [2, 3, 3]},
                         bos_token_id=1, eos_token_id=2, pad_token_id=0),
        vision_config=dict(depth=depth, hidden_size=32, intermediate_size=48, num_heads=2, window_size=window_size,
                           fullatt_block_indexes=list(fullatt), out_hidden_size=64, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=IMAGE_TOKEN, video_token_id=6, vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END, tie_word_embeddings=tie)


def qwen3_config(*, tie: bool = False, depth: int = 3, deepstack=(0, 2), vocab: int = 256,
                 attention_bias: bool = False) -> Qwen3VLConfig:
    """A small grid of learned positions (8 x 8), so images larger and smaller than it interpolate."""
    return Qwen3VLConfig(
        text_config=dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                         max_position_embeddings=1024, tie_word_embeddings=tie, attention_bias=attention_bias,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [2, 3, 3], "mrope_interleaved": True},
                         bos_token_id=1, eos_token_id=2, pad_token_id=0),
        vision_config=dict(depth=depth, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                           num_position_embeddings=64, deepstack_visual_indexes=list(deepstack)),
        image_token_id=IMAGE_TOKEN, video_token_id=6, vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END, tie_word_embeddings=tie)


# model_type -> (transformers class, our package)
_FAMILIES = {"qwen2_5_vl": (Qwen2_5_VLForConditionalGeneration, qwen2_5_vl),
             "qwen3_vl": (Qwen3VLForConditionalGeneration, qwen3_vl)}


def hf_model(config: Qwen2_5_VLConfig | Qwen3VLConfig, seed: int = 0):
    torch.manual_seed(seed)
    model = _FAMILIES[config.model_type][0](config).eval()
    with torch.no_grad():  # default init leaves norms at 1 and biases at 0: randomise them too
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_q" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def ours_from_hf(model, dtype: str = "float32"):
    """Our model of the same family with the transformers model's weights."""
    family = _FAMILIES[model.config.model_type][1].weights.FAMILY
    cfg = family.config_cls.from_hf(model.config.to_dict())
    abstract = nnx.eval_shape(lambda: family.model_cls(cfg, dtype=np.dtype(dtype), rngs=nnx.Rngs(0)))
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    return family.load_tensors(abstract, ((k, v.shape, lambda v=v: v) for k, v in state.items()))


def hf_logits(model, input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None) -> np.ndarray:
    """transformers logits with M-RoPE switched on (mm_token_type_ids; see ENVIRONMENT.md)."""
    ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
    kwargs = dict(input_ids=ids, mm_token_type_ids=(ids == model.config.image_token_id).int())
    if attention_mask is not None:
        kwargs["attention_mask"] = torch.as_tensor(np.asarray(attention_mask))
    if pixel_values is not None:
        kwargs["pixel_values"] = torch.as_tensor(np.asarray(pixel_values))
        kwargs["image_grid_thw"] = torch.as_tensor(np.asarray(image_grid_thw))
    with torch.no_grad():
        return model(**kwargs).logits.float().numpy()


def image_sequence(rng: np.random.Generator, grids, text_lengths, vocab: int = 256) -> np.ndarray:
    """Text runs interleaved with <vision_start> image-pads <vision_end> for each grid."""
    parts = [rng.integers(10, vocab, text_lengths[0])]
    for grid, length in zip(grids, text_lengths[1:]):
        n = int(np.prod(grid)) // 4
        parts += [[VISION_START], [IMAGE_TOKEN] * n, [VISION_END], rng.integers(10, vocab, length)]
    return np.concatenate([np.asarray(p, np.int64) for p in parts])


def padded(seqs, length: int, left) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) [len(seqs), length]: each sequence padded with 0 on the left where `left[row]`, else the right."""
    ids, mask = np.zeros((len(seqs), length), np.int64), np.zeros((len(seqs), length), np.int64)
    for row, seq in enumerate(seqs):
        start = length - len(seq) if left[row] else 0
        ids[row, start:start + len(seq)], mask[row, start:start + len(seq)] = seq, 1
    return ids, mask


def random_batch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 rows of 0-3 random images each, left- and right-padded: (ids, mask, grids)."""
    grids = [np.array([[1, 2 * rng.integers(1, 5), 2 * rng.integers(1, 5)] for _ in range(rng.integers(0, 4))],
                      np.int64).reshape(-1, 3) for _ in range(3)]
    seqs = [image_sequence(rng, g, rng.integers(1, 6, len(g) + 1)) for g in grids]
    ids, mask = padded(seqs, max(map(len, seqs)) + 2, [False, True, False])
    return ids, mask, np.concatenate(grids)


def pixels(rng: np.random.Generator, grids, patch_dim: int, extra: int = 0) -> np.ndarray:
    """Random patches for images of `grids`, plus `extra` (padding) ones."""
    return rng.standard_normal((int(np.sum(np.prod(grids, -1))) + extra, patch_dim)).astype(np.float32)


def image_request(rng: np.random.Generator, grids, text_lengths, patch_dim: int = 1176) -> dict:
    """An engine request (1-D input_ids) of text runs and images of `grids` (see `image_sequence`);
    patch_dim 1176 is 3 x 2 x 14 x 14, the tiny configs'."""
    grids = np.asarray(grids)
    return dict(input_ids=image_sequence(rng, grids, text_lengths), pixel_values=pixels(rng, grids, patch_dim),
                image_grid_thw=grids)


def image_inputs(rng: np.random.Generator, grids, text_lengths, patch_dim: int) -> dict:
    """`__call__` keywords for one sequence of text runs and images of `grids` (see `image_sequence`)."""
    request = image_request(rng, grids, text_lengths, patch_dim)
    return dict(request, input_ids=request["input_ids"][None])


def one_image_inputs(seed: int, patch_dim: int) -> dict:
    """`__call__` keywords for one sequence holding one 4 x 6-patch image."""
    return image_inputs(np.random.default_rng(seed), [[1, 4, 6]], [3, 5], patch_dim)


def assert_close(ours, theirs, mask=None) -> float:
    """Asserts max |ours - theirs| (where `mask`) <= TOL and returns it."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    diff = np.abs(ours - theirs)
    if mask is not None:
        diff = diff[np.asarray(mask).astype(bool)]
    assert diff.max() <= TOL, diff.max()
    return float(diff.max())


def check_images(hf, ours, rng: np.random.Generator, grids, text_lengths) -> tuple[dict, np.ndarray, float]:
    """One sequence of text runs and images of `grids`: ours equals transformers.
    Returns the `__call__` keywords, our logits and the max |logit diff|."""
    inputs = image_inputs(rng, grids, text_lengths, ours.config.vision.patch_dim)
    logits = np.asarray(ours(**inputs))
    return inputs, logits, assert_close(logits, hf_logits(hf, **inputs))


def check_padded_batch(hf, ours, rng: np.random.Generator) -> float:
    """Two sequences with an image each, left- then right-padded: ours equals transformers on the real tokens."""
    grids = np.array([[1, 4, 8], [1, 6, 6]])
    seqs = [image_sequence(rng, grids[:1], [2, 3]), image_sequence(rng, grids[1:], [6, 9])]
    worst = 0.0
    for left in (True, False):
        ids, mask = padded(seqs, max(map(len, seqs)) + 3, [left, left])
        patches = pixels(rng, grids, ours.config.vision.patch_dim)
        theirs = hf_logits(hf, ids, mask, patches, grids)
        worst = max(worst, assert_close(ours(ids, attention_mask=mask, pixel_values=patches, image_grid_thw=grids),
                                        theirs, mask))
    return worst


def check_bfloat16(hf, ours, rng: np.random.Generator, grids=((1, 8, 12),), text_lengths=(5, 7)) -> None:
    """Our bfloat16 model lies within 2e-2 (relative norm) of our float32 one on a sequence with
    images of `grids` (by default shaped as the parity tests' one image, so float32 needs no new program)."""
    ours_bf16 = ours_from_hf(hf, dtype="bfloat16")
    inputs = image_inputs(rng, grids, text_lengths, ours.config.vision.patch_dim)
    full, half = np.asarray(ours(**inputs)), np.asarray(ours_bf16(**inputs))
    assert ours_bf16.model.embed_tokens.dtype == np.dtype("bfloat16")
    assert np.linalg.norm(half - full) / np.linalg.norm(full) <= 2e-2


def chunked_positions(rope, seq: np.ndarray, grids: np.ndarray, cuts) -> tuple[np.ndarray, object]:
    """Positions [3, T] of one sequence computed chunk by chunk (split at sorted `cuts`) with
    `rope.chunk_positions`, each chunk given the grids of the images whose first pad it holds."""
    state, parts, used = rope.RopeState(), [], 0
    for start, stop in zip([0, *cuts], [*cuts, len(seq)]):
        chunk = seq[start:stop]
        previous = np.r_[seq[start - 1] if start else -1, chunk[:-1]]
        begins = np.flatnonzero((chunk == IMAGE_TOKEN) & (previous != IMAGE_TOKEN))
        positions, state = rope.chunk_positions(chunk, grids[used:used + len(begins)], state, IMAGE_TOKEN, 2)
        used += len(begins)
        parts.append(positions)
    return np.concatenate(parts, axis=1), state


def write_shards(tensors: dict[str, np.ndarray], path) -> None:
    """`tensors` as a checkpoint of two safetensors shards and their index in folder `path`."""
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, os.path.join(path, shard))
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"weight_map": {k: s for s, keys in shards.items() for k in keys}}, f)


def rewrite_checkpoint(src: str, dst, edit) -> str:
    """A copy of the single-file checkpoint in `src` under `dst`, its tensors dict changed by `edit`."""
    tensors = load_file(os.path.join(src, "model.safetensors"))
    edit(tensors)
    save_file(tensors, os.path.join(dst, "model.safetensors"))
    with open(os.path.join(src, "config.json")) as f_src, open(os.path.join(dst, "config.json"), "w") as f_dst:
        f_dst.write(f_src.read())
    return str(dst)
