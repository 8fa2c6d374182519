"""Config pieces shared by sft.py, grpo.py, calibrate.py and eval.py (configs are data: no logic beyond presets).

Every field is overridable from the command line (`--config.grpo.steps=10`); `arg` strings
select presets (`configs/grpo.py:smoke`), among them the model: `model=NAME` names any preset of
`gog_jax.models.families.PRESETS` (Qwen2.5-VL `tiny` (default), `small`, `3b`, `7b`, `32b`;
Qwen3-VL `qwen3_vl_tiny`, `qwen3_vl_2b`, `qwen3_vl_4b`, `qwen3_vl_8b`). A checkpoint
(`--config.model.checkpoint=DIR`) brings its own family in its `config.json`.
"""

import ml_collections
from ml_collections import config_dict

from gog_jax.models import families
from gog_jax.sharding import DEFAULT_RULES
from gog_jax.world.world import PRESETS as WORLD_PRESETS
from gog_jax.world.world import flat_config


def parse_arg(arg: str | None, known: set[str]) -> dict[str, str]:
    """'smoke' or 'world=small,n=8' -> {'smoke': '', 'world': 'small', 'n': '8'}; unknown keys fail."""
    out = {}
    for item in (arg or "").split(","):
        if item.strip():
            key, _, value = item.partition("=")
            out[key.strip()] = value.strip()
    if set(out) - known:
        raise ValueError(f"Unknown config args {sorted(set(out) - known)}; known: {sorted(known)}.")
    return out


def model(name: str = "tiny") -> ml_collections.ConfigDict:
    """`config.model` for preset `name`: its family (a `model_type`), its shapes, no checkpoint."""
    family, preset = families.preset(name)
    return ml_collections.ConfigDict(dict(family=family, preset=preset, checkpoint="", dtype="float32"))


def base(mode: str, model_name: str = "tiny") -> ml_collections.ConfigDict:
    """The embedded default: tiny model (or preset `model_name`), default synthetic world, one CPU device."""
    c = ml_collections.ConfigDict()
    c.mode = mode
    c.seed = 0
    c.model = model(model_name)
    c.tokenizer = ""  # "": the checkpoint's tokenizer.json, else the embedded default
    c.vision = ml_collections.ConfigDict(dict(min_pixels=56 * 56, max_pixels=168 * 168))
    c.lora = ml_collections.ConfigDict(dict(rank=0, alpha=16.0, targets=(r"model/layers/.*",)))
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
    c.rules = DEFAULT_RULES
    c.distributed = False  # jax.distributed.initialize() (multi-host; coordinator from the environment)

    c.world = ml_collections.ConfigDict(flat_config(WORLD_PRESETS["default"]))
    c.index_dir = ""
    # relative_coords unset: the frame the model family grounds boxes in (Qwen3-VL 0-1000, Qwen2.5-VL pixels)
    c.env = ml_collections.ConfigDict(dict(max_turns=5, top_k=3, max_response_tokens=512, fault_rate=0.0, seed=0,
                                           prompt="empty", relative_coords=config_dict.placeholder(bool)))
    c.accuracy = "exact_match"
    c.lam = 0.1  # r = (1 - lam) * r_acc + lam * r_fmt
    c.tool_workers = 8
    c.overlap_tools = False  # True: tools run while other slots decode (faster, timing-dependent floats)

    c.engine = ml_collections.ConfigDict(dict(num_slots=64, max_seq_len=768, decode_steps=16))
    # loss_share: a row's positions that may carry a loss, where the LM head runs (1: all); the
    # default's SFT and GRPO rows carry ~20%, and 0.5 of 768 leaves room for 5 turns x 48 tokens
    c.pack = ml_collections.ConfigDict(dict(rows=4, seq_len=768, image_slots=22, image_patches=144,
                                            max_segments=8, loss_share=0.5))
    c.optim = ml_collections.ConfigDict(dict(weight_decay=0.0, clip_norm=1.0,
                                            vision_lr_scale=0.1,  # x the stage's rate for the vision tower (optim.py)
                                            master_dtype="float32"))  # master copy of narrower (bf16) params
    c.loss = ml_collections.ConfigDict(dict(vocab_chunk=512, remat=False, attention_block=128))
    # steps between saves; SFT's own, rarer: a save costs about one SFT step, so one every 20 would add ~5%
    c.checkpoint = ml_collections.ConfigDict(dict(every=20, sft_every=100, keep=2, async_save=True))
    c.log_every_seconds = 20.0
    return c


def sft(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Stage 1: behaviour alignment on trajectories (the oracle mixture of DESIGN §6 by default)."""
    return ml_collections.ConfigDict(dict(
        data="",                 # JSONL of conversations (DESIGN §2); "": oracle demonstrations in the world
        num_questions=2400,      # demonstrations to write (train split)
        glance_only_share=0.5,   # of gaze questions demonstrated by the glance-only baseline (RL headroom)
        wrong_crop_share=0.0,    # gaze episodes that crop a wrong emblem first, then reflect; the tiny
                                 # model copies the wrong crops instead (README Results), so 0 here
        rename_share=1.0,        # episodes with every name and year swapped (world/rename.py: no memorising)
        epochs=3, steps=1500,    # steps > 0 overrides epochs (1500: fewer lost GRPO's gain, README Results)
        micro_batches=1,         # packed batches per optimizer step (gradient accumulation)
        learning_rate=3e-3, schedule="cosine", warmup_steps=10,
        cache_dir="~/.cache/gog_jax/sft",  # exported SFT checkpoints by config hash ("" disables)
        batch_cache_gb=4.0,      # host memory for built batches, reused every epoch (the default SFT: 141 x 15 MB)
    ))


def grpo(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Stage 2: tiny-model RL settings (DESIGN §6: beta 0, G 8), not the 7B paper's; lr 1e-4, not
    DESIGN's ~3e-4: from the same SFT policies 3e-4 gained +0.063 and lost 0.025 (two seeds), 1e-4
    gained +0.065 and +0.027, both intervals above zero (README Results)."""
    del c
    return ml_collections.ConfigDict(dict(
        init="sft",                # "sft": start from the (cached) SFT export; "none": from config.model
        steps=10,
        num_questions=2400,        # training questions the curriculum draws from
        questions_per_step=16,
        group_size=8,
        temperature=1.0, top_p=1.0, max_new_tokens=48,  # per assistant turn
        learning_rate=1e-4, schedule="constant", warmup_steps=0,  # veRL/EasyR1's GRPO schedule
        advantage="grpo",          # grpo | drgrpo | rloo (gog_jax.train.losses.ADVANTAGES)
        aggregation="token_mean",  # token_mean | seq_mean_token_mean | seq_mean_token_sum_norm
        norm_length=0,             # seq_mean_token_sum_norm's constant (0: unset)
        clip_low=0.2, clip_high=0.28,
        kl_coef=0.0,               # k3 KL to the initial policy (paper: 0.001)
        is_cap=2.0,                # truncated importance weight vs the sampler's log-probs (0: off)
        zero_variance="drop",      # drop | resample | keep
        max_resample_rounds=2,
        curriculum_weights=(("level1", 0.25), ("level2", 1.0), ("untried", 0.5)),
        skip_solved=True,
        pass_rate_decay=1.0,       # 1: cumulative pass rates; < 1: older groups count less
        eval_every=10,
        pictures=4,
    ))


def curriculum(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Calibration before GRPO: k rollouts on the first `questions` training questions (0 disables)."""
    del c
    return ml_collections.ConfigDict(dict(k=4, questions=128))


def evaluation(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Held-out greedy evaluation before and after GRPO (the main job's headline numbers)."""
    del c
    return ml_collections.ConfigDict(dict(split="test", num_questions=600, probe_questions=64, pictures=8))


def small_world(c: ml_collections.ConfigDict) -> None:
    c.world = ml_collections.ConfigDict(flat_config(WORLD_PRESETS["small"]))


def smoke(c: ml_collections.ConfigDict) -> None:
    """A run of a minute or two that exercises every stage (tests share one)."""
    small_world(c)
    c.checkpoint.update(every=1, sft_every=1)
    c.engine.update(num_slots=8, max_seq_len=512, decode_steps=8)
    c.pack.update(rows=4, image_slots=12)
    c.env.max_turns = 3
    if "sft" in c:
        c.sft.update(num_questions=16, epochs=1, steps=2, cache_dir="")
    if "grpo" in c:
        c.grpo.update(steps=2, num_questions=48, questions_per_step=2, group_size=4, max_new_tokens=24,
                      eval_every=2, pictures=2, zero_variance="keep")
    if "curriculum" in c:
        c.curriculum.update(k=2, questions=4)
    if "eval" in c:
        c.eval.update(num_questions=4, probe_questions=2, pictures=2)
    if "calibrate" in c:
        c.calibrate.update(num_questions=4, k=2)
