"""Qwen2.5-VL hyper-parameters as frozen dataclasses, read from and written to HF `config.json`.

Both layouts of `config.json` in the wild are read: the flat one of the released checkpoints
(text fields at the top level, `rope_scaling`) and the nested one transformers 5 writes
(`text_config`, `rope_parameters`).
"""

import dataclasses
from typing import Any, ClassVar

ARCHITECTURE = "Qwen2_5_VLForConditionalGeneration"
MODEL_TYPE = "qwen2_5_vl"


class VisionDims:
    """Derived sizes of a vision tower config (Qwen2.5-VL's and Qwen3-VL's alike)."""
    hidden_size: int
    num_heads: int
    in_channels: int
    temporal_patch_size: int
    patch_size: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2


@dataclasses.dataclass(frozen=True)
class VisionConfig(VisionDims):
    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3420
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    out_hidden_size: int = 3584
    tokens_per_second: int = 2
    rope_theta: float = 10000.0


@dataclasses.dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    mrope_section: tuple[int, ...] = (16, 24, 24)
    max_position_embeddings: int = 128000
    # Read by the shared decoder, which Qwen3-VL's TextConfig drives otherwise.
    qkv_bias: ClassVar[bool] = True
    o_bias: ClassVar[bool] = False
    qk_norm: ClassVar[bool] = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def mrope_axes(self) -> tuple[int, ...]:
        """The position axis (0 t, 1 h, 2 w) of each rotary frequency: contiguous sections."""
        return tuple(i % 3 for i, n in enumerate(self.mrope_section) for _ in range(n))


@dataclasses.dataclass(frozen=True)
class VLConfig:
    """What a Qwen-VL family's config shares: its text and vision sections (typed by the
    subclass), the special tokens, the common checks, and `config.json` around the sections.

    A subclass names its architecture, model_type and name (in messages) as class keywords, and
    implements `sections_from_hf`, `sections_to_hf` and (to add checks) `problems`.
    """
    text: Any
    vision: Any
    tie_word_embeddings: bool = False
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    eos_token_ids: tuple[int, ...] = (151645,)
    pad_token_id: int | None = None

    ARCHITECTURE: ClassVar[str]
    MODEL_TYPE: ClassVar[str]
    NAME: ClassVar[str]

    def __init_subclass__(cls, *, architecture: str, model_type: str, name: str, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.ARCHITECTURE, cls.MODEL_TYPE, cls.NAME = architecture, model_type, name

    def __post_init__(self):
        if problems := self.problems():
            raise ValueError(f"Invalid {self.NAME} config: " + "; ".join(problems) + ".")

    def problems(self) -> list[str]:
        text, vision = self.text, self.vision
        problems = []
        if text.num_attention_heads % text.num_key_value_heads:
            problems.append("num_attention_heads is not a multiple of num_key_value_heads")
        if len(text.mrope_section) != 3 or 2 * sum(text.mrope_section) != text.head_dim:
            problems.append(f"mrope_section {text.mrope_section} must be 3 sections summing to head_dim/2 = "
                            f"{text.head_dim // 2}")
        if vision.hidden_size % vision.num_heads or vision.head_dim % 4:
            problems.append("vision head_dim must be an integer multiple of 4 (2D rotary)")
        special = (self.image_token_id, self.video_token_id, self.vision_start_token_id, self.vision_end_token_id,
                   *self.eos_token_ids)
        if max(special) >= text.vocab_size:
            problems.append(f"special token ids {special} must lie below vocab_size {text.vocab_size}")
        return problems

    @classmethod
    def sections_from_hf(cls, text_hf: dict[str, Any], vision_hf: dict[str, Any]) -> tuple[Any, Any]:
        """(text, vision) configs from the text entries (top level and `text_config` merged) and `vision_config`."""
        raise NotImplementedError

    def sections_to_hf(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(`text_config`, `vision_config`) of the nested layout, less the entries `to_hf` adds."""
        raise NotImplementedError

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "VLConfig":
        """Builds from a parsed `config.json`; raises on an architecture we do not implement."""
        archs = hf.get("architectures") or [cls.ARCHITECTURE]
        if hf.get("model_type", cls.MODEL_TYPE) != cls.MODEL_TYPE or cls.ARCHITECTURE not in archs:
            raise ValueError(
                f"Unsupported architecture: model_type={hf.get('model_type')!r}, architectures={archs}; "
                f"{cls.__module__.rsplit('.', 1)[0]} loads only {cls.ARCHITECTURE} ({cls.MODEL_TYPE!r}).")
        text_hf = {**hf, **hf.get("text_config", {})}
        eos = text_hf.get("eos_token_id", 151645)
        text, vision = cls.sections_from_hf(text_hf, hf.get("vision_config", {}))
        return cls(
            text=text, vision=vision,
            tie_word_embeddings=hf.get("tie_word_embeddings", text_hf.get("tie_word_embeddings", False)),
            image_token_id=hf.get("image_token_id", 151655),
            video_token_id=hf.get("video_token_id", 151656),
            vision_start_token_id=hf.get("vision_start_token_id", 151652),
            vision_end_token_id=hf.get("vision_end_token_id", 151653),
            eos_token_ids=tuple(eos) if isinstance(eos, (list, tuple)) else (eos,),
            pad_token_id=text_hf.get("pad_token_id"),
        )

    def to_hf(self) -> dict[str, Any]:
        """The nested `config.json` layout that transformers 5 writes and reads."""
        text, vision = self.sections_to_hf()
        eos = list(self.eos_token_ids) if len(self.eos_token_ids) > 1 else self.eos_token_ids[0]
        return {
            "architectures": [self.ARCHITECTURE],
            "model_type": self.MODEL_TYPE,
            "tie_word_embeddings": self.tie_word_embeddings,
            "image_token_id": self.image_token_id,
            "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
            "text_config": {**text, "eos_token_id": eos, "pad_token_id": self.pad_token_id,
                            "tie_word_embeddings": self.tie_word_embeddings},
            "vision_config": vision,
            "eos_token_id": eos,
        }


@dataclasses.dataclass(frozen=True)
class ModelConfig(VLConfig, architecture=ARCHITECTURE, model_type=MODEL_TYPE, name="Qwen2.5-VL"):
    text: TextConfig = TextConfig()
    vision: VisionConfig = VisionConfig()

    def problems(self) -> list[str]:
        text, vision = self.text, self.vision
        problems = super().problems()
        if text.hidden_size % text.num_attention_heads:
            problems.append("text hidden_size is not divisible by num_attention_heads")
        if vision.window_size % (vision.patch_size * vision.spatial_merge_size):
            problems.append("vision window_size must be a multiple of patch_size * spatial_merge_size")
        if any(not 0 <= i < vision.depth for i in vision.fullatt_block_indexes):
            problems.append(f"fullatt_block_indexes {vision.fullatt_block_indexes} outside depth {vision.depth}")
        return problems

    @classmethod
    def sections_from_hf(cls, text_hf: dict[str, Any], vision_hf: dict[str, Any]) -> tuple[TextConfig, VisionConfig]:
        rope = text_hf.get("rope_parameters") or text_hf.get("rope_scaling") or {}
        vision_rope = vision_hf.get("rope_parameters") or {}
        text = TextConfig(
            vocab_size=text_hf["vocab_size"],
            hidden_size=text_hf["hidden_size"],
            intermediate_size=text_hf["intermediate_size"],
            num_hidden_layers=text_hf["num_hidden_layers"],
            num_attention_heads=text_hf["num_attention_heads"],
            num_key_value_heads=text_hf.get("num_key_value_heads") or text_hf["num_attention_heads"],
            rms_norm_eps=text_hf.get("rms_norm_eps", 1e-6),
            rope_theta=rope.get("rope_theta", text_hf.get("rope_theta", 1000000.0)),
            mrope_section=tuple(rope.get("mrope_section", (16, 24, 24))),
            max_position_embeddings=text_hf.get("max_position_embeddings", 128000),
        )
        vision = VisionConfig(
            depth=vision_hf.get("depth", 32),
            hidden_size=vision_hf.get("hidden_size", 1280),
            intermediate_size=vision_hf.get("intermediate_size", 3420),
            num_heads=vision_hf.get("num_heads", 16),
            in_channels=vision_hf.get("in_channels", vision_hf.get("in_chans", 3)),
            patch_size=vision_hf.get("patch_size", 14),
            temporal_patch_size=vision_hf.get("temporal_patch_size", 2),
            spatial_merge_size=vision_hf.get("spatial_merge_size", 2),
            window_size=vision_hf.get("window_size", 112),
            fullatt_block_indexes=tuple(vision_hf.get("fullatt_block_indexes", (7, 15, 23, 31))),
            out_hidden_size=vision_hf.get("out_hidden_size", text.hidden_size),
            tokens_per_second=vision_hf.get("tokens_per_second", 2),
            rope_theta=vision_rope.get("rope_theta", 10000.0),
        )
        return text, vision

    def sections_to_hf(self) -> tuple[dict[str, Any], dict[str, Any]]:
        t, v = self.text, self.vision
        text = {
            "model_type": "qwen2_5_vl_text",
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads,
            "rms_norm_eps": t.rms_norm_eps,
            "max_position_embeddings": t.max_position_embeddings,
            "hidden_act": "silu",
            "rope_parameters": {"rope_type": "default", "rope_theta": t.rope_theta,
                                "mrope_section": list(t.mrope_section)},
        }
        vision = {
            "model_type": "qwen2_5_vl_vision",
            "depth": v.depth,
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_heads": v.num_heads,
            "in_channels": v.in_channels,
            "patch_size": v.patch_size,
            "temporal_patch_size": v.temporal_patch_size,
            "spatial_merge_size": v.spatial_merge_size,
            "window_size": v.window_size,
            "fullatt_block_indexes": list(v.fullatt_block_indexes),
            "out_hidden_size": v.out_hidden_size,
            "tokens_per_second": v.tokens_per_second,
            "hidden_act": "silu",
        }
        return text, vision
