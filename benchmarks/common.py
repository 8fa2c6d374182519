"""Shared by the benchmarks: the same random weights in transformers and in our model, and timing."""

import statistics
import time

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import torch
from flax import nnx
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from gog_jax.models import qwen2_5_vl


def hf_config_for(preset: str) -> Qwen2_5_VLConfig:
    """transformers config with the shapes of one of our presets."""
    cfg = qwen2_5_vl.model_config(qwen2_5_vl.get_preset(preset))
    hf = cfg.to_hf()
    hf["text_config"]["bos_token_id"] = None
    return Qwen2_5_VLConfig(**{k: v for k, v in hf.items() if k not in ("architectures", "model_type")})


def twin_models(preset: str, seed: int = 0, dtype: str = "float32", device: str = "cpu"):
    """(transformers model, our model) holding identical random weights in `dtype`.

    The transformers model is built on torch `device` (on a GPU its random init takes seconds,
    not minutes); its tensors reach ours bit for bit (bfloat16 through an int16 view).
    """
    torch.manual_seed(seed)
    with torch.device(device):
        hf = Qwen2_5_VLForConditionalGeneration(hf_config_for(preset)).to(getattr(torch, dtype)).eval()
    cfg = qwen2_5_vl.ModelConfig.from_hf(hf.config.to_dict())
    abstract = nnx.eval_shape(lambda: qwen2_5_vl.Qwen25VL(cfg, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0)))
    tensors = ((k, tuple(v.shape), lambda v=v: _to_numpy(v)) for k, v in hf.state_dict().items())
    return hf, qwen2_5_vl.load_tensors(abstract, tensors)


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_image_batch(cfg, batch: int, image_size: int, text_tokens: int, seed: int = 0):
    """input_ids [B, T] with one image each, pixel_values and image_grid_thw as transformers takes them."""
    from gog_jax.processing import image as image_lib
    rng = np.random.default_rng(seed)
    pixels, grids, rows = [], [], []
    for _ in range(batch):
        pv, grid = image_lib.preprocess(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8),
                                        max_pixels=image_size ** 2)
        pixels.append(pv)
        grids.append(grid)
        n = int(np.prod(grid)) // cfg.vision.spatial_merge_size ** 2
        rows.append(np.concatenate([[cfg.vision_start_token_id], [cfg.image_token_id] * n,
                                    [cfg.vision_end_token_id], rng.integers(100, 10000, text_tokens)]))
    return np.stack(rows), np.concatenate(pixels), np.stack(grids)
