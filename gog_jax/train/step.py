"""The jitted update shared by SFT and GRPO: log-probs of packed batches, losses, accumulation.

A `Learner` owns the trainable parameters (all of them, or the LoRA factors), the frozen rest,
an optional frozen reference (for the KL term) and the optimizer state, each placed on the mesh
by the logical-axis rules. One optimizer step is: `accumulate` over the step's micro-batches
(each a fixed-shape `packing.Batch`; gradients summed in a donated buffer, so the program
compiles once whatever the number of micro-batches), then `apply`. Both are jitted with
explicit in/out shardings and donation. Each micro-batch's loss is pre-scaled by its share of
the step's normaliser (tokens or sequences), so accumulation gives exactly the loss of one big
batch. Parameters narrower than `master_dtype` (bfloat16 on accelerators) get a float32 master
copy: gradients accumulate, Adam's moments live and updates land in float32, and the bfloat16
parameters the forward (and the engine) reads are the master rounded after each step; an
update of 1e-6 relative would otherwise round away in bfloat16.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gog_jax import sharding as sharding_lib
from gog_jax.models import lora as lora_lib
from gog_jax.models.qwen2_5_vl.model import VisionLanguageModel
from gog_jax.rollout.packing import Batch
from gog_jax.train import losses


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """kind "sft": token NLL on the loss mask; kind "grpo": the clipped policy loss of `losses`."""

    kind: str = "sft"
    vocab_chunk: int = 4096
    remat: bool = False
    attention_block: int = 128  # causal attention in query blocks (decoder.forward); 0: one piece
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0
    is_cap: float | None = 2.0
    aggregation: str = "token_mean"
    norm_length: int | None = None
    max_segments: int = 16


def lm_head_kernel(model: VisionLanguageModel) -> jax.Array:
    """[D, V]: the LM head, or the transposed embedding when tied."""
    if model.lm_head is None:
        return model.model.embed_tokens[...].T
    return model.lm_head.kernel[...]


def at_loss_positions(batch: Batch, x: jax.Array) -> jax.Array:
    """[R, T, ...] -> [R, loss_len, ...]: `x` at each row's loss positions (`Batch.loss_index`)."""
    index = batch.loss_index.reshape(batch.loss_index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)


def batch_logprobs(model: VisionLanguageModel, batch: Batch, cfg: LossConfig) -> tuple[jax.Array, jax.Array]:
    """log p(target) and entropy [R, loss_len] (float32) at a packed batch's loss positions.

    The LM head (and its vocabulary chunks) runs on those positions only: a row gathers them
    from its own hidden states, so a batch sharded by rows stays sharded.
    """
    features = jax.vmap(model.encode_images)(batch.pixel_values, batch.vision)  # [N, (1 + L,) U, D]
    features = jnp.moveaxis(features, 0, -3)  # DeepStack rows (Qwen3-VL), if any, first: [(1 + L,) N, U, D]
    features = features.reshape(*features.shape[:-3], -1, features.shape[-1])
    features = jnp.take(features, batch.feature_index, axis=-2)
    hidden, _ = model.forward(batch.tokens, batch.positions, segment_ids=batch.segment_ids,
                              image_features=features, remat=cfg.remat,
                              attention_block=cfg.attention_block)
    return losses.token_logprobs(at_loss_positions(batch, hidden), lm_head_kernel(model),
                                 at_loss_positions(batch, batch.targets), chunk_size=cfg.vocab_chunk)


def _loss(trainable, frozen, reference, batch: Batch, scale, graphdef, cfg: LossConfig):
    """Scaled loss and metric sums of one micro-batch (sums, so accumulation is exact)."""
    logprobs, entropy = batch_logprobs(nnx.merge(graphdef, trainable, frozen), batch, cfg)
    mask = at_loss_positions(batch, batch.loss_mask)
    tokens = jnp.sum(mask)
    metrics = {"tokens": tokens, "entropy_sum": jnp.sum(entropy * mask)}
    if cfg.kind == "sft":
        nll = -jnp.sum(logprobs * mask)
        metrics["nll_sum"] = nll
        return nll * scale, metrics
    ref = None
    if cfg.kl_coef:
        ref = jax.lax.stop_gradient(batch_logprobs(nnx.merge(graphdef, reference, frozen), batch, cfg)[0])
    loss, stats = losses.policy_loss(
        logprobs, jax.lax.stop_gradient(logprobs), at_loss_positions(batch, batch.advantages), mask,
        segment_ids=at_loss_positions(batch, batch.segment_ids),
        clip_low=cfg.clip_low, clip_high=cfg.clip_high, kl_coef=cfg.kl_coef, ref_logprobs=ref,
        sampler_logprobs=at_loss_positions(batch, batch.sampler_logprobs), is_cap=cfg.is_cap,
        aggregation=cfg.aggregation,
        max_segments=cfg.max_segments, norm_length=cfg.norm_length)
    metrics.update({f"{k}_sum": v * tokens for k, v in stats.items() if jnp.ndim(v) == 0})
    metrics["policy_loss_sum"] = loss * scale
    return loss * scale, metrics


class Learner:
    """Parameters, optimizer state and the jitted `accumulate` / `apply` (see the module docstring)."""

    def __init__(self, model: VisionLanguageModel, optimizer: optax.GradientTransformation, cfg: LossConfig,
                 mesh: Mesh, rules=sharding_lib.DEFAULT_RULES, *, lora: bool = False, reference: bool = False,
                 master_dtype: str | None = "float32"):
        self.cfg, self.mesh, self.optimizer = cfg, mesh, optimizer
        self.model_config = model.config
        self.graphdef, trainable, frozen = nnx.split(model, lora_lib.trainable(lora), ...)
        self.shardings = {"trainable": sharding_lib.state_shardings(trainable, mesh, rules),
                          "frozen": sharding_lib.state_shardings(frozen, mesh, rules)}
        self.trainable = sharding_lib.put(trainable, self.shardings["trainable"])
        self.frozen = sharding_lib.put(frozen, self.shardings["frozen"])
        # the KL reference: a frozen copy of the initial trainable parameters
        self.reference = (jax.tree.map(jnp.copy, self.trainable) if reference else None)
        # the float32 master copy, where some trainable parameter is narrower than `master_dtype`
        wide = jnp.dtype(master_dtype) if master_dtype else None
        self.master = None
        if wide is not None and any(x.dtype.itemsize < wide.itemsize for x in jax.tree.leaves(trainable)
                                    if jnp.issubdtype(x.dtype, jnp.floating)):
            self.master = jax.jit(lambda t: jax.tree.map(lambda x: x.astype(wide), t),
                                  out_shardings=self.shardings["trainable"])(self.trainable)
        # moments shard like their parameters; scalars (step counts) are replicated
        per_leaf = jax.tree.map(lambda s, sub: jax.tree.map(lambda _: s, sub), self.shardings["trainable"], trainable)
        self.shardings["opt_state"] = optax.tree_map_params(
            optimizer, lambda _, s: s, jax.eval_shape(optimizer.init, self.optimized), per_leaf,
            transform_non_params=lambda _: NamedSharding(mesh, PartitionSpec()))
        self.opt_state = jax.jit(optimizer.init, out_shardings=self.shardings["opt_state"])(self.optimized)
        self.rules = rules
        self._programs: dict[Any, Any] = {}

    # ---- state -----------------------------------------------------------------------------
    @property
    def params(self):
        """The whole model state (trainable + frozen), for the engine and for export; no copy."""
        return nnx.merge_state(self.trainable, self.frozen)

    @property
    def optimized(self):
        """What the optimizer updates (and gradients accumulate in): the master copy, if any."""
        return self.trainable if self.master is None else self.master

    def model(self) -> VisionLanguageModel:
        return nnx.merge(self.graphdef, self.trainable, self.frozen)

    def state(self) -> dict:
        """What a checkpoint holds (the reference is rebuilt from the initial checkpoint)."""
        state = {"trainable": self.trainable, "opt_state": self.opt_state}
        return state if self.master is None else dict(state, master=self.master)

    def load_state(self, state: dict) -> None:
        self.trainable = sharding_lib.put(state["trainable"], self.shardings["trainable"])
        self.opt_state = sharding_lib.put(state["opt_state"], self.shardings["opt_state"])
        if self.master is not None:
            self.master = sharding_lib.put(state["master"], self.shardings["trainable"])

    def abstract_state(self) -> dict:
        """Shape/dtype/sharding targets for restoring a checkpoint onto this mesh."""
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), self.state())

    # ---- programs --------------------------------------------------------------------------
    def batch_shardings(self, batch: Batch):
        """Rows (and image slots) over the batch axes; positions shard their row axis."""
        def axis_of(path):
            name = path[0].name
            return 1 if name == "positions" else 0
        out = sharding_lib.leading_axis_shardings(batch, self.mesh, self.rules, axis_of)
        return dataclasses.replace(out, feature_index=NamedSharding(self.mesh, PartitionSpec()))

    def _compiled(self, batch: Batch):
        key = jax.tree.structure(batch), tuple(x.shape for x in jax.tree.leaves(batch))
        if key in self._programs:
            return self._programs[key]
        sh = self.shardings
        batch_sh = self.batch_shardings(batch)
        replicated = NamedSharding(self.mesh, PartitionSpec())
        grad_fn = jax.grad(functools.partial(_loss, graphdef=self.graphdef, cfg=self.cfg), has_aux=True)

        def accumulate(grads, metrics, trainable, frozen, reference, batch, scale):
            g, m = grad_fn(trainable, frozen, reference, batch, scale)
            return jax.tree.map(lambda a, b: a + b.astype(a.dtype), grads, g), jax.tree.map(jnp.add, metrics, m)

        metric_shapes = jax.eval_shape(lambda *a: grad_fn(*a)[1], self.trainable, self.frozen, self.reference,
                                       batch, jnp.float32(1))
        metric_sh = jax.tree.map(lambda _: replicated, metric_shapes)
        ref_sh = None if self.reference is None else sh["trainable"]
        master_sh = None if self.master is None else sh["trainable"]
        programs = {
            "zeros": jax.jit(lambda t: (jax.tree.map(jnp.zeros_like, t),
                                        jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)),
                             out_shardings=(sh["trainable"], metric_sh)),
            "accumulate": jax.jit(accumulate, donate_argnums=(0, 1),
                                  in_shardings=(sh["trainable"], metric_sh, sh["trainable"], sh["frozen"], ref_sh,
                                                batch_sh, replicated),
                                  out_shardings=(sh["trainable"], metric_sh)),
            "apply": jax.jit(self._apply, donate_argnums=(0, 1, 2),
                             in_shardings=(sh["trainable"], master_sh, sh["opt_state"], sh["trainable"]),
                             out_shardings=(sh["trainable"], master_sh, sh["opt_state"], replicated)),
        }
        self._programs[key] = programs
        return programs

    def _apply(self, trainable, master, opt_state, grads):
        """AdamW on the master copy (or on the parameters themselves); parameters = master rounded."""
        updated = trainable if master is None else master
        updates, opt_state = self.optimizer.update(grads, opt_state, updated)
        updated = optax.apply_updates(updated, updates)
        if master is None:
            return updated, None, opt_state, optax.global_norm(grads)
        return (jax.tree.map(lambda m, p: m.astype(p.dtype), updated, trainable), updated, opt_state,
                optax.global_norm(grads))

    def gradients(self, batches: list[Batch], scales: list[float]):
        """Summed gradients and metric sums over micro-batches (device arrays)."""
        if not batches:
            raise ValueError("An optimizer step needs at least one micro-batch.")
        programs = self._compiled(batches[0])
        grads, metrics = programs["zeros"](self.optimized)
        for batch, scale in zip(batches, scales):
            grads, metrics = programs["accumulate"](grads, metrics, self.trainable, self.frozen, self.reference,
                                                    sharding_lib.put(batch, self.batch_shardings(batch)),
                                                    np.float32(scale))
        return grads, metrics

    def step(self, batches: list[Batch], scales: list[float]) -> dict[str, float]:
        """One optimizer step over micro-batches; returns host metrics (means over trained tokens)."""
        grads, metrics = self.gradients(batches, scales)
        self.trainable, self.master, self.opt_state, grad_norm = self._compiled(batches[0])["apply"](
            self.trainable, self.master, self.opt_state, grads)
        metrics = jax.device_get(metrics)
        tokens = max(float(metrics.pop("tokens")), 1.0)
        out = {k[:-4]: float(v) / tokens for k, v in metrics.items() if k.endswith("_sum")
               and k != "policy_loss_sum"}
        if "policy_loss_sum" in metrics:
            out["policy_loss"] = float(metrics["policy_loss_sum"])
        out.update(tokens=tokens, grad_norm=float(grad_norm))
        return out
