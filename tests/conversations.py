"""Synthetic multi-turn conversations (text, a question image, optional crops) shared by tests."""

import numpy as np

from gog_jax.agent import protocol
from gog_jax.agent import render as render_lib
from gog_jax.rollout.packing import Example

VISION = render_lib.VisionSpec(max_pixels=112 * 112)


def image(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def example(tokenizer, seed: int, turns: int, crop: bool, advantage: float = 0.0,
            vision: render_lib.VisionSpec = VISION) -> Example:
    """A rendered conversation: question image, `turns` glance turns (the first with a crop), an answer.

    Sampler log-probs are random negatives on assistant tokens (RL examples); `vision`: the
    model's image processing (how many pad tokens an image takes)."""
    conversation = [protocol.Turn("system", ("Answer.",)),
                    protocol.question_turn(f"Question {seed}?", image(seed, 112, 84))]
    for turn in range(turns):
        conversation.append(protocol.assistant_turn(f"<think>step {turn}</think><glance/>"))
        crop_image = image(seed + 100 + turn, 56, 56) if crop and turn == 0 else None
        conversation.append(protocol.observation_turn(f"result {turn}", crop_image))
    conversation.append(protocol.assistant_turn("<think>done</think><answer>yes</answer>"))
    chunks = render_lib.render(conversation, tokenizer, vision)
    mask = render_lib.loss_mask(chunks)
    logprobs = np.where(mask, -np.random.default_rng(seed).uniform(0.1, 3.0, mask.shape), 0.0).astype(np.float32)
    return Example(np.concatenate([c.token_ids for c in chunks]), mask, [im for c in chunks for im in c.images],
                   advantage=advantage, sampler_logprobs=logprobs, id=f"ex{seed}")
