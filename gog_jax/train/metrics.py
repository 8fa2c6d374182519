"""Metrics: clu writers (TensorBoard + console), progress with ETA, trajectory pictures.

Only the first process writes (every host computes the same numbers).
"""

import time
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from absl import logging
from clu import metric_writers

from gog_jax.eval import report


def make_writer(logdir: str) -> metric_writers.MetricWriter:
    """TensorBoard event files under `logdir` plus the console (absl log)."""
    return metric_writers.create_default_writer(logdir, just_logging=jax.process_index() > 0, asynchronous=False)


class Progress:
    """Periodic progress line with steps/s and ETA (clu's `ReportProgress` needs a TF summary context
    for its own writes; this one is plain and prints through the writer).

    The rate is timed from the end of the first step it sees, so neither the first step's
    compilation nor, after a resume, the steps done before count in it (both skewed the ETA)."""

    def __init__(self, total_steps: int, writer: metric_writers.MetricWriter, every_seconds: float = 30.0,
                 name: str = "train", clock=time.perf_counter):
        self.total, self.writer, self.every, self.name, self.clock = total_steps, writer, every_seconds, name, clock
        self.start = self.last = clock()
        self.first_step: int | None = None
        self.start_rate = float("nan")

    def __call__(self, step: int, *, force: bool = False) -> None:
        now = self.clock()
        if self.first_step is None:  # a one-step rate (compile included) until a second step is seen
            self.first_step, self.start_rate = step, 1.0 / max(now - self.start, 1e-9)
            self.start = self.last = now
        if not force and now - self.last < self.every:
            return
        self.last = now
        done = step - self.first_step
        rate = done / max(now - self.start, 1e-9) if done else self.start_rate
        eta = (self.total - step) / rate
        logging.info("%s step %d/%d (%.1f%%), %.3f steps/s, ETA %.0f s", self.name, step, self.total,
                     100.0 * step / max(self.total, 1), rate, eta)
        self.writer.write_scalars(step, {f"{self.name}/steps_per_sec": rate, f"{self.name}/eta_seconds": eta})


def tool_use_rates(action_lists: Sequence[Sequence[str]]) -> dict[str, float]:
    """Share of episodes using each tool at least once, and actions per episode (collapse watch)."""
    n = max(len(action_lists), 1)
    rates = {f"tool_use/{a}_episode_rate": sum(a in acts for acts in action_lists) / n
             for a in ("glance", "gaze", "search", "invalid")}
    rates["tool_use/turns_mean"] = sum(len(acts) for acts in action_lists) / n
    return rates


def write_pictures(writer: metric_writers.MetricWriter, step: int, episodes: Sequence[tuple[str, np.ndarray,
                                                                                            list]]) -> None:
    """(name, image, boxes) -> TensorBoard images with the gaze boxes drawn."""
    if not episodes:
        return
    images = {f"trajectories/{name}": report.draw_trajectory(image, boxes)[None]
              for name, image, boxes in episodes}
    writer.write_images(step, images)


def scalars(prefix: str, values: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}/{k}": float(v) for k, v in values.items() if isinstance(v, (int, float, np.number))}
