"""Logical axis names -> mesh axes, by one rules table that lives in the config.

Parameters carry `logical_axes` metadata; `spec_for` maps each to a `PartitionSpec` using the
first rule whose mesh axes exist in the mesh and divide the dimension, so one table serves a
laptop CPU, 8 fake devices and a TPU pod slice alike.
"""

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> candidate mesh axes (a tuple shards over several); activations use "batch".
DEFAULT_RULES: tuple[tuple[str, tuple[str, ...] | str | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("qkv", "tensor"),
    ("patch", None),
    ("norm", None),
)


def make_mesh(shape: Sequence[int], axes: Sequence[str] = MESH_AXES, devices=None) -> Mesh:
    """A mesh with Auto axis types (the kind `jax.jit` shardings and orbax expect)."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    if int(np.prod(shape)) != devices.size:
        raise ValueError(f"Mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices; {devices.size} available.")
    return Mesh(devices.reshape(tuple(shape)), tuple(axes), axis_types=(AxisType.Auto,) * len(axes))


def spec_for(logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
             rules: Sequence[tuple[str, object]] = DEFAULT_RULES) -> PartitionSpec:
    """PartitionSpec for an array with these logical axes; a mesh axis is used at most once."""
    table: Mapping[str, object] = dict(rules)
    used: set[str] = set()
    spec = []
    for name, dim in zip(logical_axes, shape):
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a in mesh.shape and a not in used)
        size = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
        if not axes or dim % size:
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def sharding_for(logical_axes, shape, mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
    return NamedSharding(mesh, spec_for(logical_axes, shape, mesh, rules))
