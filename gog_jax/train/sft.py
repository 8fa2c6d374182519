"""SFT mode: reflective Glance-or-Gaze behaviour alignment on multi-turn trajectories.

    python -m gog_jax.main --config=configs/sft.py [--config.sft.data=conversations.jsonl]

Data: any JSONL of conversations in the trajectory format (DESIGN §2), or, by default, the
synthetic world's oracle mixture written on the fly. Each conversation is rendered once (the
only tokenisation), packed in a seeded random order into fixed-shape batches (each batch a
sample of the whole mixture) and trained on assistant tokens only. The
data order is a pure function of the step (a per-epoch permutation), so a resumed run sees
exactly the batches it would have seen. The result is exported as a Hugging Face folder
(LoRA merged, tokenizer included) that `grpo`, `calibrate` and `eval` load like any checkpoint.
"""

import hashlib
import json
import os
import shutil
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from PIL import Image

from gog_jax import hosts
from gog_jax.agent import render as render_lib
from gog_jax.agent import trajectory
from gog_jax.models import families
from gog_jax.models import lora as lora_lib
from gog_jax.rollout import packing
from gog_jax.rollout.packing import Example, Packed
from gog_jax.train import build, checkpoint, metrics, optim
from gog_jax.train.step import Learner
from gog_jax.world.demonstrations import write_demonstrations


def read_examples(path: str, tokenizer, vision: render_lib.VisionSpec, gaze_config) -> tuple[list[Example], dict]:
    """JSONL conversations -> examples; a record that fails to load or render is skipped and counted."""
    root = os.path.dirname(os.path.abspath(path))
    examples, skipped = [], {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                turns = trajectory.from_record(record, lambda p: _load_image(root, p), gaze_config)
                chunks = render_lib.render(turns, tokenizer, vision)
            except Exception as error:  # pylint: disable=broad-except  # one bad record never stops training
                reason = type(error).__name__
                skipped[reason] = skipped.get(reason, 0) + 1
                logging.warning("%s:%d skipped: %s: %s", path, line_no, reason, error)
                continue
            examples.append(Example(np.concatenate([c.token_ids for c in chunks]), render_lib.loss_mask(chunks),
                                    [im for c in chunks for im in c.images], id=str(record.get("id", line_no))))
    return examples, skipped


def _load_image(root: str, path: str) -> np.ndarray:
    with Image.open(os.path.join(root, path)) as image:
        return np.asarray(image.convert("RGB"))


def data_order(step: int, num_batches: int, per_step: int, seed: int) -> list[int]:
    """Batch indices of optimizer step `step` (0-based): consecutive slices of per-epoch permutations."""
    steps_per_epoch = max(num_batches // per_step, 1)
    epoch, k = divmod(step, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_batches)
    return order[k * per_step:(k + 1) * per_step].tolist()


# Bumped when a code change alters what SFT trains to from the same config and data (2: batches
# packed in a seeded random order; 3: rows fitted to the longest example), so an export cached
# by an older version is not reused.
CACHE_VERSION = 3


def config_hash(config, data: str) -> str:
    """What determines the SFT result: model, optimisation, world and packing fields, the
    tokenizer's vocabulary itself (not only its path), the data's content (the JSONL and the
    images it names) and `CACHE_VERSION`, so an edited dataset, a new demonstration format or a
    changed trainer is never served a stale export. Used as the cache key; where the cache lives
    (`sft.cache_dir`) and how many built batches stay in memory (`sft.batch_cache_gb`) are not
    part of it."""
    keys = ("seed", "model", "tokenizer", "vision", "lora", "world", "env", "pack", "optim", "loss", "sft")
    fields = {k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k] for k in keys}
    fields["sft"] = {k: v for k, v in fields["sft"].items() if k not in ("cache_dir", "batch_cache_gb")}
    blob = json.dumps({"version": CACHE_VERSION, **fields}, sort_keys=True, default=str)
    digest = hashlib.sha256((blob + build.tokenizer(config).backend.to_str()).encode())
    digest.update(data_digest(data).encode())
    return digest.hexdigest()[:16]


def data_digest(path: str) -> str:
    """sha256 over a JSONL file and, in order, every image file its records name."""
    root = os.path.dirname(os.path.abspath(path))
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for line in f:
            digest.update(line)
            try:
                images = json.loads(line).get("images", [])
            except (ValueError, AttributeError):
                continue  # read_examples skips and counts such a record
            for image in images:
                image_path = os.path.join(root, image)
                if os.path.exists(image_path):
                    with open(image_path, "rb") as im:
                        digest.update(im.read())
    return digest.hexdigest()


def prepare_data(config, workdir: str, world_backend: tuple | None = None) -> str:
    """The JSONL to train on: `sft.data`, or the world's oracle mixture written to `workdir`
    (`world_backend`: `build.world(config)` if the caller has it, else built here)."""
    c = config.sft
    if c.data:
        return c.data
    data = os.path.join(workdir, "demonstrations", "demonstrations.jsonl")
    if hosts.is_primary():  # the same file on every host: written once, read by all
        world, backend = world_backend or build.world(config)
        demos = write_demonstrations(world, backend, os.path.dirname(data), split="train",
                                     glance_only_share=c.glance_only_share, wrong_crop_share=c.wrong_crop_share,
                                     env_config=build.env_config(config), num_questions=c.num_questions,
                                     seed=config.seed, rename_share=c.rename_share)
        logging.info("demonstrations: %s", demos)
    hosts.barrier("sft:demonstrations")
    return data


def train(config, workdir: str, data: str) -> dict[str, Any]:
    """Runs SFT on `data` into `workdir` (resuming from its checkpoints); returns the summary
    with `export_dir`."""
    c = config.sft
    tokenizer = build.tokenizer(config)
    model = build.model(config)
    gaze = build.env_config(config, model.config).gaze
    vision = gaze.vision
    examples, skipped = read_examples(data, tokenizer, vision, gaze)
    pack = packing.fit_rows(build.pack_config(config), [len(e) for e in examples])
    packed = Packed(examples, model.config, vision, pack, seed=config.seed,
                    cache_bytes=int(c.batch_cache_gb * 2**30))
    per_step = c.micro_batches
    total = c.steps if c.steps > 0 else c.epochs * max(len(packed) // per_step, 1)
    logging.info("SFT: %d examples (%d dropped, %s skipped) in %d batches of %d x %d tokens, %d steps",
                 len(packed.examples), len(packed.dropped), skipped, len(packed), pack.rows, pack.seq_len, total)
    learner = Learner(model, build.optimizer(config, c, total), build.loss_config(config, "sft"), build.mesh(config),
                      build.rules(config), lora=bool(config.lora.rank), master_dtype=config.optim.master_dtype or None)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), every=config.checkpoint.sft_every,
                                   keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
    start = 0
    if ckpt.latest_step() is not None:
        start = ckpt.latest_step()
        state, _ = ckpt.restore(start, learner.abstract_state())
        learner.load_state(state)
        logging.info("SFT resumed at step %d", start)
    writer = metrics.make_writer(os.path.join(workdir, "tensorboard"))
    progress = metrics.Progress(total, writer, config.log_every_seconds, name="sft")
    lr_schedule = optim.schedule_fn(**build.schedule(c, total))
    history = []
    t0 = time.perf_counter()
    orders = [data_order(step, len(packed), per_step, config.seed) for step in range(start, total)]
    for step, indices, batches in zip(range(start, total), orders, packed.prefetch(orders)):
        tokens = sum(packed.trained_tokens(i) for i in indices)
        out = learner.step(batches, [1.0 / max(tokens, 1)] * len(indices))
        out["lr"] = float(lr_schedule(step))
        history.append(out["nll"])
        writer.write_scalars(step + 1, metrics.scalars("sft", out))
        progress(step + 1, force=step + 1 == total)
        if ckpt.should_save(step + 1) or step + 1 == total:
            ckpt.save(step + 1, learner.state(), {"step": step + 1})
    ckpt.close()
    export_dir = os.path.join(workdir, "export")
    export(learner, tokenizer, export_dir, lora=bool(config.lora.rank))
    writer.flush()
    return {"export_dir": export_dir, "steps": total, "examples": len(packed.examples),
            "dropped": len(packed.dropped), "skipped": skipped, "final_nll": history[-1] if history else None,
            "seconds": time.perf_counter() - t0, "packing_efficiency": packed.tokens / max(
                len(packed) * packed.pack_config.rows * packed.pack_config.seq_len, 1)}


def export(learner: Learner, tokenizer, directory: str, lora: bool) -> None:
    """A Hugging Face folder: weights (LoRA merged), config, generation config, tokenizer."""
    model = learner.model()
    if lora:
        lora_lib.merge_lora(model)
    families.save_pretrained(model, directory)
    if hosts.is_primary():
        tokenizer.save(directory)
    hosts.barrier("sft:export")


def cached_or_train(config, workdir: str, world_backend: tuple | None = None) -> dict[str, Any]:
    """The SFT export for this config: reused from the cache by config hash, else trained and cached
    (`world_backend` as for `prepare_data`).

    Single-process only: the cache is a host-local folder, which a pod's hosts do not share, so
    multi-host runs use the export in the (shared) workdir."""
    cache_root = (os.path.expanduser(config.sft.cache_dir) if config.sft.cache_dir and jax.process_count() == 1
                  else "")
    workdir = os.path.join(workdir, "sft")
    data = prepare_data(config, workdir, world_backend)
    key = config_hash(config, data)
    cached = os.path.join(cache_root, key) if cache_root else ""
    if cached and os.path.exists(os.path.join(cached, "summary.json")):
        with open(os.path.join(cached, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
        logging.info("SFT checkpoint reused from the cache: %s", cached)
        return dict(summary, export_dir=cached, cached=True, config_hash=key)
    summary = train(config, workdir, data)
    if cached:
        os.makedirs(cache_root, exist_ok=True)
        tmp = f"{cached}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(summary["export_dir"], tmp)
        with open(os.path.join(tmp, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, sort_keys=True, default=str)
        os.replace(tmp, cached)
        summary = dict(summary, export_dir=cached)
    return dict(summary, cached=False, config_hash=key)


def run(config, workdir: str) -> dict[str, Any]:
    """The `sft` mode of `gog_jax.main`."""
    return train(config, workdir, prepare_data(config, workdir))
