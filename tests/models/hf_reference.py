"""Random tiny transformers Qwen2.5-VL models and the same weights in our Flax model (tests only)."""

import numpy as np
import torch
from flax import nnx
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from gog_jax.models import qwen2_5_vl

IMAGE_TOKEN = 5
VISION_START, VISION_END = 3, 4


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


def hf_model(config: Qwen2_5_VLConfig, seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    with torch.no_grad():  # default init leaves norms at 1 and biases at 0: randomise them too
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_q" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def ours_from_hf(model: Qwen2_5_VLForConditionalGeneration, dtype: str = "float32") -> qwen2_5_vl.Qwen25VL:
    cfg = qwen2_5_vl.ModelConfig.from_hf(model.config.to_dict())
    abstract = nnx.eval_shape(lambda: qwen2_5_vl.Qwen25VL(cfg, dtype=np.dtype(dtype), rngs=nnx.Rngs(0)))
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    return qwen2_5_vl.load_tensors(abstract, ((k, v.shape, lambda v=v: v) for k, v in state.items()))


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
