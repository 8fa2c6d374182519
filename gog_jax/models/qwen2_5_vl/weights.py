"""Qwen2.5-VL's Hugging Face key map; the I/O itself is `gog_jax.models.checkpoint`.

Loading reads either key layout in the wild: `visual.*`/`model.*` of the released checkpoints
(which transformers still writes) or the `model.visual.*`/`model.language_model.*` names of
transformers 5 modules. Saving writes the released layout.
"""

from gog_jax.models import checkpoint
from gog_jax.models.checkpoint import PATCH as _PATCH, TRANSPOSE as _T
from gog_jax.models.qwen2_5_vl.config import ModelConfig
from gog_jax.models.qwen2_5_vl.model import Qwen25VL

_GROUPS = {
    "i": r"\d+",
    "vnorm": "norm1|norm2",
    "vattn": "qkv|proj",
    "mlp": "gate_proj|up_proj|down_proj",
    "attn": "q_proj|k_proj|v_proj",
    "tnorm": "input_layernorm|post_attention_layernorm",
    "bias_kind": "weight|bias",
}

# (canonical HF key, our parameter path, transform)
RULES: tuple[tuple[str, str, str | None], ...] = (
    ("model.visual.patch_embed.proj.weight", "visual.patch_embed.kernel", _PATCH),
    ("model.visual.blocks.{i}.{vnorm}.weight", "visual.blocks.{i}.{vnorm}.scale", None),
    ("model.visual.blocks.{i}.attn.{vattn}.weight", "visual.blocks.{i}.attn.{vattn}.kernel", _T),
    ("model.visual.blocks.{i}.attn.{vattn}.bias", "visual.blocks.{i}.attn.{vattn}.bias", None),
    ("model.visual.blocks.{i}.mlp.{mlp}.weight", "visual.blocks.{i}.mlp.{mlp}.kernel", _T),
    ("model.visual.blocks.{i}.mlp.{mlp}.bias", "visual.blocks.{i}.mlp.{mlp}.bias", None),
    ("model.visual.merger.ln_q.weight", "visual.merger.ln_q.scale", None),
    ("model.visual.merger.mlp.0.weight", "visual.merger.fc1.kernel", _T),
    ("model.visual.merger.mlp.0.bias", "visual.merger.fc1.bias", None),
    ("model.visual.merger.mlp.2.weight", "visual.merger.fc2.kernel", _T),
    ("model.visual.merger.mlp.2.bias", "visual.merger.fc2.bias", None),
    ("model.language_model.embed_tokens.weight", "model.embed_tokens", None),
    ("model.language_model.layers.{i}.{tnorm}.weight", "model.layers.{i}.{tnorm}.scale", None),
    ("model.language_model.layers.{i}.self_attn.{attn}.weight", "model.layers.{i}.self_attn.{attn}.kernel", _T),
    ("model.language_model.layers.{i}.self_attn.{attn}.bias", "model.layers.{i}.self_attn.{attn}.bias", None),
    ("model.language_model.layers.{i}.self_attn.o_proj.weight", "model.layers.{i}.self_attn.o_proj.kernel", _T),
    ("model.language_model.layers.{i}.mlp.{mlp}.weight", "model.layers.{i}.mlp.{mlp}.kernel", _T),
    ("model.language_model.norm.weight", "model.norm.scale", None),
    ("lm_head.weight", "lm_head.kernel", _T),
)


def canonical_key(key: str) -> str:
    """Released-checkpoint key -> transformers 5 key (`visual.x` -> `model.visual.x`, ...)."""
    if key.startswith("visual."):
        return "model." + key
    if key.startswith("model.") and not key.startswith(("model.visual.", "model.language_model.")):
        return "model.language_model." + key[len("model."):]
    return key


def released_key(key: str) -> str:
    """transformers 5 module key -> the key the released checkpoints (and save_pretrained) use."""
    if key.startswith("model.visual."):
        return key[len("model."):]
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model."):]
    return key


FAMILY = checkpoint.Family(Qwen25VL, ModelConfig,
                           checkpoint.KeyMap(_GROUPS, RULES, canonical_key=canonical_key, released_key=released_key))
hf_to_ours, ours_to_hf = FAMILY.keys.hf_to_ours, FAMILY.keys.ours_to_hf
load_tensors, read_config = FAMILY.load_tensors, FAMILY.read_config
from_pretrained, save_pretrained = FAMILY.from_pretrained, FAMILY.save_pretrained
