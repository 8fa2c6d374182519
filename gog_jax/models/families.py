"""The model families behind one interface: model class, config, checkpoint key map, presets,
image normalisation and grounding frame of each `model_type`.

Everything above `gog_jax.models` (engine, packing, trainers, configs) picks a family here, by
a preset name (`PRESETS`: Qwen2.5-VL's `tiny` ... `32b`, Qwen3-VL's `qwen3_vl_*`) or by the
`model_type` of a checkpoint's `config.json`, and then only uses the common model surface
(`VisionLanguageModel`). Two facts a checkpoint's `config.json` does not hold are family data
here: the image normalisation (its `preprocessor_config.json`'s mean and std) and the frame
its boxes are grounded in (`relative_coords`: Qwen3-VL writes 0-1000 of the image, Qwen2.5-VL
pixels of the image as resized for it).
"""

import dataclasses
import json
import os
from collections.abc import Callable

import jax.numpy as jnp
import ml_collections
from flax import nnx

from gog_jax.models import checkpoint
from gog_jax.models import qwen2_5_vl, qwen3_vl
from gog_jax.models.qwen2_5_vl.config import VLConfig
from gog_jax.models.qwen2_5_vl.model import VisionLanguageModel
from gog_jax.processing import image


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    io: checkpoint.Family  # model class, config class, key map
    presets: tuple[str, ...]
    get_preset: Callable[[str], ml_collections.ConfigDict]
    model_config: Callable[[ml_collections.ConfigDict], VLConfig]
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    relative_coords: bool

    @property
    def name(self) -> str:
        return self.io.config_cls.MODEL_TYPE


QWEN2_5_VL = ModelFamily(qwen2_5_vl.weights.FAMILY, qwen2_5_vl.PRESETS, qwen2_5_vl.get_preset,
                         qwen2_5_vl.model_config, image.CLIP_MEAN, image.CLIP_STD, relative_coords=False)
QWEN3_VL = ModelFamily(qwen3_vl.weights.FAMILY, qwen3_vl.PRESETS, qwen3_vl.get_preset, qwen3_vl.model_config,
                       image.QWEN3_VL["mean"], image.QWEN3_VL["std"], relative_coords=True)
FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (QWEN2_5_VL, QWEN3_VL)}
PRESETS: dict[str, ModelFamily] = {name: f for f in FAMILIES.values() for name in f.presets}


def named(model_type: str) -> ModelFamily:
    if model_type not in FAMILIES:
        raise ValueError(f"Unsupported model_type {model_type!r}; known: {sorted(FAMILIES)}.")
    return FAMILIES[model_type]


def of(config: VLConfig) -> ModelFamily:
    """The family of a model config."""
    return named(config.MODEL_TYPE)


def preset(name: str) -> tuple[str, ml_collections.ConfigDict]:
    """(family name, preset ConfigDict) of a preset name from `PRESETS`."""
    if name not in PRESETS:
        raise ValueError(f"Unknown model preset {name!r}; known: {sorted(PRESETS)}.")
    return PRESETS[name].name, PRESETS[name].get_preset(name)


def _of_folder(path: str) -> ModelFamily:
    """The family named by the `model_type` of a Hugging Face folder's `config.json`."""
    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"No config.json in {path}.")
    with open(config_path) as f:
        return named(json.load(f).get("model_type", ""))


def read_config(path: str) -> VLConfig:
    """The config of a Hugging Face folder of any family."""
    return _of_folder(path).io.read_config(path)


def from_pretrained(path: str, dtype: str | jnp.dtype = "float32", **kwargs) -> VisionLanguageModel:
    """A Hugging Face folder of any family (kwargs: mesh, rules)."""
    return _of_folder(path).io.from_pretrained(path, dtype, **kwargs)


def save_pretrained(model: VisionLanguageModel, path: str) -> None:
    of(model.config).io.save_pretrained(model, path)


def build(config: VLConfig, dtype: str | jnp.dtype = "float32", seed: int = 0) -> VisionLanguageModel:
    """A randomly initialised model of the config's family."""
    return of(config).io.model_cls(config, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(seed))


def processor(config: VLConfig) -> dict:
    """`processing.image.preprocess` keywords for this model's images (sizes from the vision config)."""
    v, family = config.vision, of(config)
    return dict(patch_size=v.patch_size, merge_size=v.spatial_merge_size, temporal_patch_size=v.temporal_patch_size,
                mean=family.image_mean, std=family.image_std)
