"""Qwen3-VL's Hugging Face key map; the I/O itself is `gog_jax.models.checkpoint`.

The released checkpoints and transformers 5 name tensors alike (`model.visual.*`,
`model.language_model.*`, `lm_head.*`), so keys are read and written as they are.
"""

from gog_jax.models import checkpoint
from gog_jax.models.checkpoint import PATCH, TRANSPOSE
from gog_jax.models.qwen3_vl.config import ModelConfig
from gog_jax.models.qwen3_vl.model import Qwen3VL

_MERGERS = r"(?:merger|deepstack_merger_list\.\d+)"
_GROUPS = {
    "i": r"\d+",
    "vlinear": rf"blocks\.\d+\.attn\.(?:qkv|proj)|blocks\.\d+\.mlp\.linear_fc[12]|{_MERGERS}\.linear_fc[12]",
    "vnorm": rf"blocks\.\d+\.norm[12]|{_MERGERS}\.norm",
    "tlinear": r"self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj",
    "tnorm": r"input_layernorm|post_attention_layernorm|self_attn\.[qk]_norm",
    "attn": r"[qkvo]_proj",
}

# (canonical HF key, our parameter path, transform)
RULES: tuple[checkpoint.Rule, ...] = (
    ("model.visual.patch_embed.proj.weight", "visual.patch_embed.kernel", PATCH),
    ("model.visual.patch_embed.proj.bias", "visual.patch_embed.bias", None),
    ("model.visual.pos_embed.weight", "visual.pos_embed", None),
    ("model.visual.{vlinear}.weight", "visual.{vlinear}.kernel", TRANSPOSE),
    ("model.visual.{vlinear}.bias", "visual.{vlinear}.bias", None),
    ("model.visual.{vnorm}.weight", "visual.{vnorm}.scale", None),
    ("model.visual.{vnorm}.bias", "visual.{vnorm}.bias", None),
    ("model.language_model.embed_tokens.weight", "model.embed_tokens", None),
    ("model.language_model.layers.{i}.{tnorm}.weight", "model.layers.{i}.{tnorm}.scale", None),
    ("model.language_model.layers.{i}.{tlinear}.weight", "model.layers.{i}.{tlinear}.kernel", TRANSPOSE),
    ("model.language_model.layers.{i}.self_attn.{attn}.bias", "model.layers.{i}.self_attn.{attn}.bias", None),
    ("model.language_model.norm.weight", "model.norm.scale", None),
    ("lm_head.weight", "lm_head.kernel", TRANSPOSE),
)

FAMILY = checkpoint.Family(Qwen3VL, ModelConfig, checkpoint.KeyMap(_GROUPS, RULES))
hf_to_ours, ours_to_hf = FAMILY.keys.hf_to_ours, FAMILY.keys.ours_to_hf
load_tensors, read_config = FAMILY.load_tensors, FAMILY.read_config
from_pretrained, save_pretrained = FAMILY.from_pretrained, FAMILY.save_pretrained
