"""Progress: the ETA a resumed run prints counts neither the compile nor the steps before the resume."""

import pytest

from gog_jax.train.metrics import Progress


class _Writer:
    def __init__(self):
        self.rows = []

    def write_scalars(self, step, scalars):
        self.rows.append((step, scalars))


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_eta_after_resume_and_compile():
    clock, writer = _Clock(), _Writer()
    progress = Progress(1500, writer, every_seconds=10.0, name="sft", clock=clock)
    clock.now = 16.0  # the first step after resuming at 400: compile + one step
    progress(401)
    assert writer.rows == []  # the first line waits `every_seconds` after the first step
    for step in range(402, 422):  # then 1 s a step
        clock.now += 1.0
        progress(step)
    step, scalars = writer.rows[-1]
    assert scalars["sft/steps_per_sec"] == pytest.approx(1.0)
    assert scalars["sft/eta_seconds"] == pytest.approx(1500 - step)


def test_a_forced_first_line_uses_the_one_step_rate():
    clock, writer = _Clock(), _Writer()
    progress = Progress(3, writer, every_seconds=10.0, clock=clock)
    clock.now = 2.0
    progress(1, force=True)
    assert writer.rows[-1][1]["train/steps_per_sec"] == pytest.approx(0.5)
    assert writer.rows[-1][1]["train/eta_seconds"] == pytest.approx(4.0)
