"""Qwen3-VL (dense) hyper-parameters as frozen dataclasses, read from and written to HF `config.json`.

Qwen3-VL's `config.json` is always nested (`text_config`, `vision_config`); the released
checkpoints keep `rope_scaling` + `rope_theta` in `text_config` where transformers 5 writes
`rope_parameters`. Both are read; a flat file (text fields at the top level) is read as well.
The sizes have no defaults (a file without them is refused, not filled in); the other
defaults are transformers'. The special tokens, common checks and the top level of
`config.json` are Qwen2.5-VL's (`VLConfig`); `presets` has the released shapes.
"""

import dataclasses
from typing import Any, ClassVar

from gog_jax.models.qwen2_5_vl.config import VisionDims, VLConfig

ARCHITECTURE = "Qwen3VLForConditionalGeneration"
MODEL_TYPE = "qwen3_vl"
_GELU = {"gelu_pytorch_tanh": True, "gelu": False}  # hidden_act -> jax.nn.gelu(approximate=...)


@dataclasses.dataclass(frozen=True)
class VisionConfig(VisionDims):
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    in_channels: int = 3
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    num_position_embeddings: int = 2304  # a square grid of learned position embeddings
    deepstack_visual_indexes: tuple[int, ...] = (8, 16, 24)
    hidden_act: str = "gelu_pytorch_tanh"
    rope_theta: float = 10000.0

    @property
    def grid_side(self) -> int:
        return int(self.num_position_embeddings ** 0.5)

    @property
    def gelu_approximate(self) -> bool:
        """Whether the blocks' MLP uses the tanh approximation of GELU."""
        return _GELU[self.hidden_act]


@dataclasses.dataclass(frozen=True)
class TextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 500000.0
    mrope_section: tuple[int, ...] = (24, 20, 20)
    attention_bias: bool = False
    max_position_embeddings: int = 128000
    qk_norm: ClassVar[bool] = True  # RMSNorm over each head of q and k (read by the shared decoder)

    @property
    def qkv_bias(self) -> bool:
        return self.attention_bias

    @property
    def o_bias(self) -> bool:
        return self.attention_bias

    @property
    def mrope_axes(self) -> tuple[int, ...]:
        """The position axis (0 t, 1 h, 2 w) of each rotary frequency, interleaved: frequency j
        turns with h when j % 3 == 1 and j < 3 * sections[1], with w when j % 3 == 2 and
        j < 3 * sections[2], else with t (transformers' `apply_interleaved_mrope`)."""
        _, h, w = self.mrope_section
        return tuple(1 if j % 3 == 1 and j < 3 * h else 2 if j % 3 == 2 and j < 3 * w else 0
                     for j in range(self.head_dim // 2))


@dataclasses.dataclass(frozen=True)
class ModelConfig(VLConfig, architecture=ARCHITECTURE, model_type=MODEL_TYPE, name="Qwen3-VL"):
    text: TextConfig
    vision: VisionConfig

    def problems(self) -> list[str]:
        text, vision = self.text, self.vision
        problems = super().problems()
        if vision.grid_side ** 2 != vision.num_position_embeddings:
            problems.append(f"num_position_embeddings {vision.num_position_embeddings} is not a square")
        if vision.hidden_act not in _GELU:
            problems.append(f"vision hidden_act {vision.hidden_act!r} is not one of {sorted(_GELU)}")
        if any(not 0 <= i < vision.depth for i in vision.deepstack_visual_indexes):
            problems.append(f"deepstack_visual_indexes {vision.deepstack_visual_indexes} outside depth {vision.depth}")
        if len(vision.deepstack_visual_indexes) > text.num_hidden_layers:
            problems.append("more DeepStack features than decoder layers to add them to")
        if vision.out_hidden_size != text.hidden_size:
            problems.append(f"vision out_hidden_size {vision.out_hidden_size} differs from text hidden_size "
                            f"{text.hidden_size}")
        return problems

    @classmethod
    def sections_from_hf(cls, text_hf: dict[str, Any], vision_hf: dict[str, Any]) -> tuple[TextConfig, VisionConfig]:
        rope = text_hf.get("rope_parameters") or text_hf.get("rope_scaling") or {}
        text = _fill(TextConfig, text_hf,
                     num_key_value_heads=text_hf.get("num_key_value_heads") or text_hf["num_attention_heads"],
                     rope_theta=rope.get("rope_theta", text_hf.get("rope_theta", TextConfig.rope_theta)),
                     mrope_section=tuple(rope.get("mrope_section", TextConfig.mrope_section)))
        vision = _fill(VisionConfig, vision_hf,
                       in_channels=vision_hf.get("in_channels", vision_hf.get("in_chans", 3)),
                       out_hidden_size=vision_hf.get("out_hidden_size", text.hidden_size),
                       rope_theta=(vision_hf.get("rope_parameters") or {}).get("rope_theta", VisionConfig.rope_theta))
        return text, vision

    def sections_to_hf(self) -> tuple[dict[str, Any], dict[str, Any]]:
        text, vision = dataclasses.asdict(self.text), dataclasses.asdict(self.vision)
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": text.pop("rope_theta"),
                                   "mrope_section": list(text.pop("mrope_section")), "mrope_interleaved": True}
        vision["rope_parameters"] = {"rope_type": "axial", "rope_theta": vision.pop("rope_theta")}
        return ({**text, "model_type": "qwen3_vl_text", "hidden_act": "silu"},
                {**vision, "model_type": "qwen3_vl_vision"})


def _fill(cls: type, hf: dict[str, Any], **overrides: Any) -> Any:
    """`cls` from the entries of `hf` named like its fields (lists as tuples), then `overrides`;
    a field absent from both keeps its default, and one without a default is an error."""
    fields = dataclasses.fields(cls)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in hf.items() if k in {f.name for f in fields}}
    values.update(overrides)
    if missing := [f.name for f in fields if f.name not in values and f.default is dataclasses.MISSING]:
        raise ValueError(f"config.json has no {missing} for the {cls.__name__} of {ARCHITECTURE}.")
    return cls(**values)
