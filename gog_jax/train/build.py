"""Builds what every training mode needs from its config: mesh, model, tokenizer, world, runner.

One place turns config data into objects, so `sft`, `grpo` and `calibrate` read the same
fields the same way (configs/common.py defines them).
"""

import functools
import os

import jax
import numpy as np
import optax
from flax import nnx

from gog_jax import sharding as sharding_lib
from gog_jax.agent import env as env_lib
from gog_jax.agent import gaze as gaze_lib
from gog_jax.agent import rewards
from gog_jax.agent.render import VisionSpec
from gog_jax.agent.tokenizer import Tokenizer, load_tokenizer
from gog_jax.models import families
from gog_jax.models import lora as lora_lib
from gog_jax.models.qwen2_5_vl.config import VLConfig
from gog_jax.models.qwen2_5_vl.model import VisionLanguageModel
from gog_jax.rollout.packing import PackConfig, loss_len_of
from gog_jax.rollout.runner import RolloutRunner
from gog_jax.sampling import Engine
from gog_jax.train import optim
from gog_jax.train.step import LossConfig
from gog_jax.world import index as index_lib
from gog_jax.world.corpus import default_tokenizer
from gog_jax.world.world import World, WorldConfig, build_world


def mesh(config) -> jax.sharding.Mesh:
    """The ('data', 'fsdp', 'tensor') mesh; one -1 entry takes the remaining devices."""
    shape = [int(config.mesh[a]) for a in sharding_lib.MESH_AXES]
    if shape.count(-1) > 1:
        raise ValueError(f"At most one mesh axis may be -1; got {shape}.")
    if -1 in shape:
        rest = int(np.prod([s for s in shape if s != -1]))
        shape[shape.index(-1)] = jax.device_count() // rest
    return sharding_lib.make_mesh(shape)


def rules(config) -> tuple:
    return tuple((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes) for name, axes in config.rules)


def model_config(config) -> VLConfig:
    """The model's config: config.model.checkpoint's (its `config.json` names the family), else
    config.model.preset of config.model.family."""
    if config.model.checkpoint:
        return families.read_config(config.model.checkpoint)
    return families.named(config.model.family).model_config(config.model.preset)


def vision_spec(config, cfg: VLConfig) -> VisionSpec:
    """config.vision's pixel bounds with the model's image processing: its patch geometry and
    its family's normalisation."""
    return VisionSpec(min_pixels=config.vision.min_pixels, max_pixels=config.vision.max_pixels,
                      **families.processor(cfg))


def env_config(config, cfg: VLConfig | None = None) -> env_lib.EnvConfig:
    """config.env for the model `cfg` (default `model_config(config)`); `env.relative_coords`
    unset means the frame the model's family grounds boxes in."""
    c = config.env
    cfg = cfg or model_config(config)
    relative = families.of(cfg).relative_coords if c.relative_coords is None else c.relative_coords
    return env_lib.EnvConfig(max_turns=c.max_turns, top_k=c.top_k, max_response_tokens=c.max_response_tokens,
                             fault_rate=c.fault_rate, seed=c.seed, prompt=c.prompt,
                             gaze=gaze_lib.GazeConfig(relative_coords=relative, vision=vision_spec(config, cfg)))


def model(config, checkpoint: str = "") -> VisionLanguageModel:
    """A model from a Hugging Face folder (`checkpoint` or config.model.checkpoint) of any family,
    or a preset, LoRA applied."""
    path = checkpoint or config.model.checkpoint
    if path:
        result = families.from_pretrained(path, config.model.dtype)
    else:
        result = families.build(model_config(config), config.model.dtype, config.seed)
    if config.lora.rank:
        lora_lib.apply_lora(result, rank=config.lora.rank, alpha=config.lora.alpha, targets=tuple(config.lora.targets),
                            rngs=nnx.Rngs(config.seed + 1))
    return result


def tokenizer(config) -> Tokenizer:
    """config.tokenizer, else the checkpoint's own tokenizer.json, else the embedded default."""
    folder = config.tokenizer or (config.model.checkpoint
                                  if os.path.exists(os.path.join(config.model.checkpoint or "-", "tokenizer.json"))
                                  else "")
    return load_tokenizer(folder) if folder else default_tokenizer()


def world(config) -> tuple[World, object]:
    """The synthetic world and its local search index (built in memory or cached on disk)."""
    w = build_world(WorldConfig.from_flat(config.world))
    return w, index_lib.world_backend(w, cache_dir=config.index_dir or None)


def pack_config(config) -> PackConfig:
    p = config.pack
    return PackConfig(rows=p.rows, seq_len=p.seq_len, image_slots=p.image_slots, image_patches=p.image_patches,
                      max_segments=p.max_segments, loss_len=loss_len_of(p.seq_len, p.loss_share))


def loss_config(config, kind: str) -> LossConfig:
    """The learner's loss: `config.loss` for both stages, plus the policy loss of `config.grpo`."""
    shared = dict(vocab_chunk=config.loss.vocab_chunk, remat=config.loss.remat,
                  attention_block=config.loss.attention_block, max_segments=config.pack.max_segments)
    if kind == "sft":
        return LossConfig(kind="sft", **shared)
    g = config.grpo
    return LossConfig(kind="grpo", clip_low=g.clip_low, clip_high=g.clip_high, kl_coef=g.kl_coef,
                      is_cap=g.is_cap or None, aggregation=g.aggregation, norm_length=g.norm_length or None,
                      **shared)


def schedule(stage, total_steps: int) -> dict:
    """A stage's (`config.sft` / `config.grpo`) learning-rate schedule arguments: each stage has
    its own (SFT: warmup + cosine; GRPO: constant, as veRL/EasyR1 run it)."""
    return dict(learning_rate=stage.learning_rate, schedule=stage.schedule,
                warmup_steps=min(stage.warmup_steps, total_steps), total_steps=total_steps)


def optimizer(config, stage, total_steps: int) -> optax.GradientTransformation:
    """AdamW for one stage: its schedule, the shared `config.optim` decay and clipping."""
    o = config.optim
    return optim.make_optimizer(**schedule(stage, total_steps), weight_decay=o.weight_decay,
                                clip_norm=o.clip_norm or None, vision_lr_scale=o.vision_lr_scale)


def runner(config, model_: VisionLanguageModel, backend, tokenizer_: Tokenizer, params=None,
           accuracy: rewards.Accuracy | None = None) -> RolloutRunner:
    """Engine + runner; the judge is `accuracy` (e.g. an LLM judge with its endpoint) or named by config.accuracy."""
    e = config.engine
    engine = Engine(model_, num_slots=e.num_slots, max_seq_len=e.max_seq_len, decode_steps=e.decode_steps,
                    rules=rules(config))
    if params is not None:
        engine.update_params(params)
    env = env_config(config, model_.config)
    judge = accuracy or rewards.make_accuracy(config.accuracy)
    reward_fn = functools.partial(rewards.episode_reward, accuracy=judge, lam=config.lam, grammar=env.grammar)
    return RolloutRunner(engine, backend, tokenizer_, env, env.gaze.vision, reward_fn=reward_fn,
                         num_workers=config.tool_workers, overlap_tools=config.overlap_tools)

