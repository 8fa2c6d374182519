"""Checkpoints: orbax `CheckpointManager` (async, keeps N) over the learner state plus JSON extras.

A checkpoint holds everything an exact resume needs: the trainable parameters and optimizer
state (`state`, restored straight onto the current mesh from shape/dtype/sharding targets) and
`extra` (step, data-iterator and RNG state, curriculum, metrics so far) as JSON.
"""

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
    """`save(step, state, extra)` every `every` steps (and on demand); `restore_latest(target)`."""

    def __init__(self, directory: str, *, every: int, keep: int = 3, async_save: bool = True):
        self.every = every
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                               create=True)
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                             item_names=("state", "extra"))

    def should_save(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, step: int, state: Any, extra: dict[str, Any], *, force: bool = False) -> bool:
        return self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                               extra=ocp.args.JsonSave(extra)), force=force)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
        """(state, extra) of `step`; `target` gives shapes, dtypes and shardings of the state."""
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                      extra=ocp.args.JsonRestore()))
        return restored["state"], restored["extra"]

    def wait(self) -> None:
        """Blocks until async saves are on disk (before exit, and before reading them back)."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
