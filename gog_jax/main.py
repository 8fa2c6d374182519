"""The one entry point: `python -m gog_jax.main --config=configs/<mode>.py[:k=v,...]`.

The config's `mode` names the module that runs; every mode module exposes
`run(config: ml_collections.ConfigDict, workdir: str) -> dict` and returns a summary.
"""

import importlib
import json
import os
import tempfile

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from gog_jax import host_allocator

# mode -> module implementing `run(config, workdir)`. Later work adds rows, never forks.
MODES = {
    "forward": "gog_jax.models.forward_demo",
    "eval": "gog_jax.eval.evaluate",
    "demos": "gog_jax.world.demonstrations",
    "sft": "gog_jax.train.sft",
    "calibrate": "gog_jax.train.calibrate",
    "grpo": "gog_jax.train.pipeline",
    "evidence": "gog_jax.train.evidence",
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:preset args].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: a fresh temporary one).")


def run_mode(config, workdir: str) -> dict:
    """Dispatches on `config.mode`; separated from `main` so tests can call it in-process."""
    if config.mode not in MODES:
        raise ValueError(f"Unknown mode {config.mode!r}; known modes: {sorted(MODES)}.")
    module = importlib.import_module(MODES[config.mode])
    return module.run(config, workdir)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    host_allocator.configure()  # before anything starts the XLA backend
    if config.get("distributed"):
        # The launcher's JAX_NUM_PROCESSES / JAX_PROCESS_ID when set (launch/gpu_slurm.sh); jax
        # itself reads JAX_COORDINATOR_ADDRESS and detects TPU VM and SLURM peers.
        count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
        jax.distributed.initialize(num_processes=int(count) if count else None,
                                   process_id=int(index) if index else None)
    workdir = os.path.abspath(_WORKDIR.value) if _WORKDIR.value else tempfile.mkdtemp(prefix="gog_jax_")
    logging.info("workdir: %s", workdir)
    print(f"workdir: {workdir}", flush=True)
    summary = run_mode(config, workdir)
    print(json.dumps(summary, indent=2, sort_keys=True, default=str), flush=True)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
