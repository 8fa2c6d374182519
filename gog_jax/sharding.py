"""Logical axis names -> mesh axes, by one rules table that lives in the config.

Parameters carry `logical_axes` metadata; `spec_for` maps each to a `PartitionSpec` using the
first rule whose mesh axes exist in the mesh and divide the dimension, so one table serves a
laptop CPU, 8 fake devices and a TPU pod slice alike.
"""

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
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


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def state_shardings(state, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedShardings for an `nnx.State` (a prefix tree: one per Variable), from `logical_axes`."""
    def one(var):
        shape = var[...].shape
        axes = var.get_metadata().get("logical_axes", (None,) * len(shape))
        return sharding_for(axes, shape, mesh, rules)
    return jax.tree.map(one, state, is_leaf=_is_variable)


def leading_axis_shardings(tree, mesh: Mesh, rules=DEFAULT_RULES, axis_of=lambda path: 0):
    """Shards each array's `axis_of(path)` dimension like a batch ('batch' rule); the rest replicated."""
    def one(path, x):
        axis = axis_of(path)
        names = [None] * x.ndim
        if x.ndim:
            names[axis] = "batch"
        return sharding_for(names, x.shape, mesh, rules)
    return jax.tree_util.tree_map_with_path(one, tree)


def put(tree, shardings):
    """Places a host-identical pytree on (possibly multi-process) shardings.

    Every process holds the same values (DESIGN §5: tool results are identical on every host),
    so each builds its addressable shards from its own copy; on one process this is device_put.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, sharding):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    # shardings may be a prefix of the tree (one per nnx Variable): broadcast over each subtree
    return jax.tree.map(lambda sharding, sub: jax.tree.map(lambda x: one(x, sharding), sub), shardings, tree)
