"""The allocator settings keep a large buffer freed by a worker thread for the next one, as
XLA:CPU's per-step temporary buffer needs (module docstring of `gog_jax.host_allocator`)."""

import subprocess
import sys

import pytest

from gog_jax import host_allocator

# A worker thread mallocs, fills and frees 256 MB four times (as XLA does, no huge pages); prints the page faults of the
# last three (the first faults its pages in in any case).
_PROBE = """
import ctypes, ctypes.util, resource, sys, threading
from gog_jax import host_allocator
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "tuned":
    assert host_allocator.keep_freed_memory()
faults = []
def work():
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffer = libc.malloc(2**28)
        ctypes.memset(buffer, 1, 2**28)
        libc.free(buffer)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(sum(faults[1:]))
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_freed_buffer_is_reused_without_page_faults():
    default, tuned = _faults("default"), _faults("tuned")
    assert default > 3 * 60_000  # 3 x 256 MB of 4 KiB pages faulted in again
    assert tuned < default / 20


def test_cpu_only_follows_named_platforms():
    assert not host_allocator.cpu_only("cuda,cpu") and not host_allocator.cpu_only("tpu")
    assert host_allocator.cpu_only("cpu")
