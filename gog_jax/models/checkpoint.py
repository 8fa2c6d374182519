"""Hugging Face safetensors <-> our parameters, for any model family, through a declarative key map.

A family (`Family`: model class, config class, `KeyMap`) pairs each canonical HF key template
with our parameter path and a transform; the same table drives loading and saving. Tensors
are read memory-mapped and placed one by one, with their sharding when a mesh is given, so a
32B checkpoint never sits whole in host memory. Every problem with a checkpoint is reported at
once, before any tensor is read.
"""

import dataclasses
import functools
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from gog_jax import hosts
from gog_jax import sharding as sharding_lib

TRANSPOSE = "transpose"  # torch Linear weight [out, in] <-> our kernel [in, out]
PATCH = "patch"  # Conv3d [out, C, t, p, p] with stride == kernel <-> matmul kernel [C*t*p*p, out]

Rule = tuple[str, str, str | None]  # (canonical HF key template, our parameter path template, transform)
Tensors = Iterator[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]]  # (HF key, shape, lazy tensor)


def _same(key: str) -> str:
    return key


@dataclasses.dataclass(frozen=True)
class KeyMap:
    """Templates with `{group}` fields (each group a regex of alternatives), plus how stored keys
    relate to the canonical ones: `canonical_key` reads any layout in the wild, `released_key`
    names what `save_pretrained` writes."""
    groups: Mapping[str, str]
    rules: tuple[Rule, ...]
    canonical_key: Callable[[str], str] = _same
    released_key: Callable[[str], str] = _same

    def _compile(self, template: str) -> re.Pattern:
        pattern = re.escape(template)
        for name, alternatives in self.groups.items():
            pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{alternatives})")
        return re.compile(pattern + "$")

    @functools.cached_property
    def _forward(self) -> list[tuple[re.Pattern, str, str | None]]:
        return [(self._compile(hf), ours, transform) for hf, ours, transform in self.rules]

    @functools.cached_property
    def _backward(self) -> list[tuple[re.Pattern, str, str | None]]:
        return [(self._compile(ours), hf, transform) for hf, ours, transform in self.rules]

    def hf_to_ours(self, key: str) -> tuple[str, str | None] | None:
        """HF key -> (our dotted path, transform), or None for a key we do not use."""
        key = self.canonical_key(key)
        for pattern, template, transform in self._forward:
            if m := pattern.match(key):
                return template.format(**m.groupdict()), transform
        return None

    def ours_to_hf(self, path: str) -> tuple[str, str | None]:
        """Our dotted path -> (canonical HF key, transform)."""
        for pattern, template, transform in self._backward:
            if m := pattern.match(path):
                return template.format(**m.groupdict()), transform
        raise KeyError(f"No HF key for parameter {path}.")


def _to_ours(tensor: np.ndarray, transform: str | None) -> np.ndarray:
    if transform == TRANSPOSE:
        return tensor.T
    if transform == PATCH:
        return tensor.reshape(tensor.shape[0], -1).T
    return tensor


def _to_hf(array: np.ndarray, transform: str | None, cfg: Any) -> np.ndarray:
    if transform == TRANSPOSE:
        return array.T
    if transform == PATCH:
        v = cfg.vision
        return array.T.reshape(-1, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    return array


def _converted_shape(shape: tuple[int, ...], transform: str | None) -> tuple[int, ...]:
    if transform == TRANSPOSE:
        return tuple(reversed(shape))
    if transform == PATCH:
        return (int(np.prod(shape[1:])), shape[0])
    return tuple(shape)


def param_table(model: nnx.Module) -> dict[str, nnx.Variable]:
    """Dotted path -> Variable for every parameter of the model."""
    return {".".join(str(p) for p in path): var for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def load_tensors(model: nnx.Module, tensors: Tensors, keys: KeyMap, *, mesh: jax.sharding.Mesh | None = None,
                 rules=sharding_lib.DEFAULT_RULES, source: str = "checkpoint") -> nnx.Module:
    """Fills an (abstract or concrete) model from (HF key, shape, lazy tensor); checks names and shapes."""
    params = param_table(model)
    plan, problems = {}, []
    for key, shape, loader in tensors:
        if key == "lm_head.weight" and model.config.tie_word_embeddings:
            continue  # tied: the embedding matrix is the head (transformers may still store a copy)
        mapped = keys.hf_to_ours(key)
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
    problems += [f"missing tensor for parameter {p} (expected HF key {keys.released_key(keys.ours_to_hf(p)[0])})"
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


def read_config(path: str, config_cls: type) -> Any:
    """`config_cls.from_hf(config.json)`, with the stop ids of `generation_config.json` if present."""
    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"No config.json in {path}.")
    with open(config_path) as f:
        hf = json.load(f)
    cfg = config_cls.from_hf(hf)
    generation = os.path.join(path, "generation_config.json")
    if os.path.exists(generation):  # the chat models' stop ids live here (im_end and endoftext)
        with open(generation) as f:
            eos = json.load(f).get("eos_token_id")
        if eos is not None:
            cfg = dataclasses.replace(cfg, eos_token_ids=tuple(eos) if isinstance(eos, list) else (eos,))
    return cfg


def save_pretrained(model: nnx.Module, path: str, keys: KeyMap) -> None:
    """Writes config.json + model.safetensors with `keys.released_key` names.

    Multi-host: every process gathers the parameters (a collective), process 0 writes, and all
    return once the folder is complete."""
    cfg = model.config
    tensors = {}
    for our_path, var in param_table(model).items():
        key, transform = keys.ours_to_hf(our_path)
        tensors[keys.released_key(key)] = np.ascontiguousarray(_to_hf(hosts.to_host(var[...]), transform, cfg))
    if hosts.is_primary():
        _write_folder(tensors, cfg, path)
    hosts.barrier(f"save_pretrained:{path}")


def _write_folder(tensors: dict[str, np.ndarray], cfg: Any, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    hf = cfg.to_hf()
    hf["dtype"] = str(next(iter(tensors.values())).dtype)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    eos = list(cfg.eos_token_ids)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": eos, "pad_token_id": cfg.pad_token_id}, f, indent=2)


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family's checkpoint I/O: its model class, config class (`from_hf`, `to_hf`) and key map."""
    model_cls: type[nnx.Module]
    config_cls: type
    keys: KeyMap

    def load_tensors(self, model: nnx.Module, tensors: Tensors, **kwargs) -> nnx.Module:
        """`load_tensors` with this family's keys (kwargs: mesh, rules, source)."""
        return load_tensors(model, tensors, self.keys, **kwargs)

    def read_config(self, path: str) -> Any:
        return read_config(path, self.config_cls)

    def from_pretrained(self, path: str, dtype: str | jnp.dtype = "float32", *, mesh: jax.sharding.Mesh | None = None,
                        rules=sharding_lib.DEFAULT_RULES) -> nnx.Module:
        """Loads `config.json` + safetensors (single file or sharded index) from a local folder."""
        cfg = self.read_config(path)
        abstract = nnx.eval_shape(lambda: self.model_cls(cfg, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0)))
        handles = [safe_open(os.path.join(path, name), framework="numpy") for name in _checkpoint_files(path)]

        def tensors():
            for handle in handles:
                for key in handle.keys():
                    yield key, tuple(handle.get_slice(key).get_shape()), (lambda h=handle, k=key: h.get_tensor(k))

        return self.load_tensors(abstract, tensors(), mesh=mesh, rules=rules, source=path)

    def save_pretrained(self, model: nnx.Module, path: str) -> None:
        save_pretrained(model, path, self.keys)
