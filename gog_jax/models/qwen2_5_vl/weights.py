"""Hugging Face safetensors <-> our parameters, through one declarative key map.

Each rule pairs a canonical HF key template with our parameter path and a transform; the
same table drives loading (either key layout in the wild: `visual.*`/`model.*` of the
released checkpoints, which transformers still writes, or the `model.visual.*`/
`model.language_model.*` names of transformers 5 modules) and saving (the released layout). Tensors are read memory-mapped and placed one by one,
with their sharding when a mesh is given, so a 32B checkpoint never sits whole in host memory.
"""

import json
import os
import re
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from gog_jax import hosts
from gog_jax import sharding as sharding_lib
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

_T = "transpose"
_PATCH = "patch"
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


def _compile(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name, alternatives in _GROUPS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{alternatives})")
    return re.compile(pattern + "$")


_FORWARD = [(_compile(hf), ours, transform) for hf, ours, transform in RULES]
_BACKWARD = [(_compile(ours), hf, transform) for hf, ours, transform in RULES]


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


def hf_to_ours(key: str) -> tuple[str, str | None] | None:
    """HF key -> (our dotted path, transform), or None for a key we do not use."""
    key = canonical_key(key)
    for pattern, template, transform in _FORWARD:
        if m := pattern.match(key):
            return template.format(**m.groupdict()), transform
    return None


def ours_to_hf(path: str) -> tuple[str, str | None]:
    for pattern, template, transform in _BACKWARD:
        if m := pattern.match(path):
            return template.format(**m.groupdict()), transform
    raise KeyError(f"No HF key for parameter {path}.")


def _to_ours(tensor: np.ndarray, transform: str | None) -> np.ndarray:
    if transform == _T:
        return tensor.T
    if transform == _PATCH:  # Conv3d [out, C, t, p, p] -> matmul kernel [C*t*p*p, out]
        return tensor.reshape(tensor.shape[0], -1).T
    return tensor


def _to_hf(array: np.ndarray, transform: str | None, cfg: ModelConfig) -> np.ndarray:
    if transform == _T:
        return array.T
    if transform == _PATCH:
        v = cfg.vision
        return array.T.reshape(-1, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    return array


def _param_table(model: Qwen25VL) -> dict[str, nnx.Variable]:
    """Dotted path -> Variable for every parameter of the model."""
    return {".".join(str(p) for p in path): var for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _converted_shape(shape: tuple[int, ...], transform: str | None) -> tuple[int, ...]:
    if transform == _T:
        return tuple(reversed(shape))
    if transform == _PATCH:
        return (int(np.prod(shape[1:])), shape[0])
    return tuple(shape)


def load_tensors(model: Qwen25VL, tensors: Iterator[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]], *,
                 mesh: jax.sharding.Mesh | None = None, rules=sharding_lib.DEFAULT_RULES,
                 source: str = "checkpoint") -> Qwen25VL:
    """Fills an (abstract or concrete) model from (HF key, shape, lazy tensor); checks names and shapes.

    Every problem is reported at once, before any tensor is read, so a bad checkpoint fails
    in seconds with the full list.
    """
    params = _param_table(model)
    plan, problems = {}, []
    for key, shape, loader in tensors:
        if key == "lm_head.weight" and model.config.tie_word_embeddings:
            continue  # tied: the embedding matrix is the head (transformers may still store a copy)
        mapped = hf_to_ours(key)
        if mapped is None:
            problems.append(f"unexpected tensor {key}")
            continue
        path, transform = mapped
        if path not in params:
            problems.append(f"tensor {key} has no parameter {path} in this config")
            continue
        if _converted_shape(tuple(shape), transform) != tuple(params[path].shape):
            problems.append(f"tensor {key} has shape {tuple(shape)}; parameter {path} expects "
                            f"{tuple(params[path].shape)} (after {transform or 'no'} conversion)")
            continue
        plan[path] = (loader, transform)
    problems += [f"missing tensor for parameter {p} (expected HF key {released_key(ours_to_hf(p)[0])})"
                 for p in sorted(set(params) - set(plan))]
    if problems:
        raise ValueError(f"Cannot load {source}: " + "; ".join(problems) + ".")
    values = {}
    for path, (loader, transform) in plan.items():
        var = params[path]
        array = np.asarray(_to_ours(loader(), transform)).astype(var.dtype)
        if mesh is not None:
            axes = var.get_metadata().get("logical_axes", (None,) * array.ndim)
            values[path] = jax.device_put(array, sharding_lib.sharding_for(axes, array.shape, mesh, rules))
        else:
            values[path] = jnp.asarray(array)
    graphdef, state = nnx.split(model)
    flat = dict(nnx.to_flat_state(state))
    for path, value in values.items():
        flat[tuple(int(p) if p.isdigit() else p for p in path.split("."))].set_value(value)
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _checkpoint_files(path: str) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return ["model.safetensors"]
    raise FileNotFoundError(f"No model.safetensors or model.safetensors.index.json in {path}.")


def read_config(path: str) -> ModelConfig:
    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"No config.json in {path}.")
    with open(config_path) as f:
        hf = json.load(f)
    cfg = ModelConfig.from_hf(hf)
    generation = os.path.join(path, "generation_config.json")
    if os.path.exists(generation):  # the chat models' stop ids live here (im_end and endoftext)
        with open(generation) as f:
            eos = json.load(f).get("eos_token_id")
        if eos is not None:
            cfg = ModelConfig(**{**cfg.__dict__, "eos_token_ids": tuple(eos) if isinstance(eos, list) else (eos,)})
    return cfg


def from_pretrained(path: str, dtype: str | jnp.dtype = "float32", *, mesh: jax.sharding.Mesh | None = None,
                    rules=sharding_lib.DEFAULT_RULES) -> Qwen25VL:
    """Loads `config.json` + safetensors (single file or sharded index) from a local folder."""
    cfg = read_config(path)
    abstract = nnx.eval_shape(lambda: Qwen25VL(cfg, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0)))
    handles = [safe_open(os.path.join(path, name), framework="numpy") for name in _checkpoint_files(path)]

    def tensors():
        for handle in handles:
            for key in handle.keys():
                yield key, tuple(handle.get_slice(key).get_shape()), (lambda h=handle, k=key: h.get_tensor(k))

    return load_tensors(abstract, tensors(), mesh=mesh, rules=rules, source=path)


def save_pretrained(model: Qwen25VL, path: str) -> None:
    """Writes config.json + model.safetensors in the released checkpoints' layout.

    Multi-host: every process gathers the parameters (a collective), process 0 writes, and all
    return once the folder is complete."""
    cfg = model.config
    tensors = {}
    for our_path, var in _param_table(model).items():
        key, transform = ours_to_hf(our_path)
        tensors[released_key(key)] = np.ascontiguousarray(_to_hf(hosts.to_host(var[...]), transform, cfg))
    if hosts.is_primary():
        _write_folder(tensors, cfg, path)
    hosts.barrier(f"save_pretrained:{path}")


def _write_folder(tensors: dict[str, np.ndarray], cfg: ModelConfig, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    hf = cfg.to_hf()
    hf["dtype"] = str(next(iter(tensors.values())).dtype)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    eos = list(cfg.eos_token_ids)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": eos, "pad_token_id": cfg.pad_token_id}, f, indent=2)
