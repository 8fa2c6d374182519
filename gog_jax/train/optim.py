"""The optimizer of both trainers: AdamW behind global-norm clipping, on a warmup + decay schedule.

Weight decay skips 1-D parameters (biases, norm scales), as transformers' Trainer does.
`schedule_fn` is the same learning-rate schedule as a function of the optimizer step, so the
trainer can log the rate it applies.
"""

import jax
import optax

SCHEDULES = ("cosine", "constant", "linear")


def schedule_fn(*, learning_rate: float, schedule: str = "cosine", warmup_steps: int,
                total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 over `warmup_steps`, then constant, or a cosine / linear decay to 0
    at `total_steps` (counted in optimizer steps, warmup included)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}; known: {SCHEDULES}.")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"Need 0 <= warmup_steps <= total_steps; got {warmup_steps} and {total_steps}.")
    decay_steps = max(total_steps - warmup_steps, 1)
    if schedule == "constant":
        main = optax.constant_schedule(learning_rate)
    elif schedule == "cosine":
        main = optax.cosine_decay_schedule(learning_rate, decay_steps)
    else:
        main = optax.linear_schedule(learning_rate, 0.0, decay_steps)
    if not warmup_steps:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps), main], [warmup_steps])


def _decay_mask(params):
    return jax.tree.map(lambda x: x.ndim > 1, params)


def _vision_mask(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(getattr(k, "key", None) == "visual" for k in path), params)


def make_optimizer(*, learning_rate: float, schedule: str = "cosine", warmup_steps: int, total_steps: int,
                   weight_decay: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   clip_norm: float | None, accumulate_steps: int = 1,
                   vision_lr_scale: float = 1.0) -> optax.GradientTransformation:
    """clip_by_global_norm(clip_norm) -> adamw(schedule), optionally wrapped in `optax.MultiSteps`.

    `vision_lr_scale` multiplies the vision tower's learning rate (0 freezes it). A randomly
    initialised tower trained at the decoder's rate can collapse to a large constant output,
    the cheapest way to silence image noise the decoder has not yet learnt to use (measured on
    the embedded default; then no answer depends on the image).

    accumulate_steps > 1 averages that many successive `update` calls' gradients and applies one
    update on the last (the schedule then counts applied updates). Its state holds a gradient-sized
    buffer; the `Learner` instead sums micro-batch gradients in its own jitted loop and calls
    `update` once per step, which is the cheaper choice there (keep accumulate_steps=1).
    The moments take the parameters' dtype: give the optimizer float32 parameters for float32 state.
    """
    if accumulate_steps < 1:
        raise ValueError(f"accumulate_steps must be >= 1; got {accumulate_steps}.")
    lr = schedule_fn(learning_rate=learning_rate, schedule=schedule, warmup_steps=warmup_steps,
                     total_steps=total_steps)
    adamw = optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=_decay_mask)
    if vision_lr_scale != 1.0:
        adamw = optax.chain(adamw, optax.masked(optax.scale(vision_lr_scale), _vision_mask))
    tx = adamw if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), adamw)
    if accumulate_steps == 1:
        return tx
    return optax.MultiSteps(tx, every_k_schedule=accumulate_steps).gradient_transformation()
