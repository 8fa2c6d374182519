"""Multi-host discipline for files: every process computes, process 0 writes.

Under `jax.distributed` every host runs the same program on the same data (the world, its tools
and the sampler are deterministic, DESIGN §5), so each host holds the same results. Shared
outputs (demonstrations, exports, JSON results, reports) are written once, by process 0, and
a barrier keeps the other hosts from reading them before they exist. A single process pays
nothing: the barrier is skipped and it is process 0.
"""

import jax
import numpy as np
from jax.experimental import multihost_utils


def is_primary() -> bool:
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all have arrived (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def to_host(x) -> np.ndarray:
    """The whole value of an array on this host, also when it is sharded over other hosts'
    devices (then a collective: every process must call it)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
