"""Qwen3-VL's host-side M-RoPE position ids: Qwen2.5-VL's, reused as they are.

For images transformers' Qwen3-VL `get_rope_index` is Qwen2.5-VL's rule: the tokens of an image
with merged grid (t, h, w) starting at text position s take (s + t_i, s + h_i, s + w_i), and text
resumes at s + max(h, w). (Qwen3-VL differs only for videos, which it splits into one-frame
grids separated by timestamp text; we take no videos.) One caveat: transformers finds images as
runs of image tokens, we by counting each grid's tokens, so two images with no token between
them would differ; the chat template always puts <vision_start>/<vision_end> around each.
"""

from gog_jax.models.qwen2_5_vl.rope import RopeState, chunk_positions, count_images, get_rope_index, merged_grid

__all__ = ["RopeState", "chunk_positions", "count_images", "get_rope_index", "merged_grid"]
