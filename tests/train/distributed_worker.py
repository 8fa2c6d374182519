"""One process of the 2-process jax.distributed test: a sharded GRPO update on a (2, 2, 2) mesh.

Usage: python -m tests.train.distributed_worker PORT PROCESS_ID OUT_JSON
"""

import json
import sys

import jax


def main(port: str, process_id: str, out: str) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=int(process_id))
    from tests.train.test_step import grpo_update  # pylint: disable=import-outside-toplevel  # after initialize
    metrics, checksum = grpo_update()
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"metrics": metrics, "checksum": checksum, "devices": jax.device_count(),
                   "local": jax.local_device_count()}, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
