import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from gog_jax.agent import protocol, render
from gog_jax.agent.protocol import Answer, Gaze
from gog_jax.agent.tokenizer import CHAT_TEMPLATE
from gog_jax.processing.image import preprocess

QWEN_VISION = render.VisionSpec(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
TINY_VISION = render.VisionSpec(min_pixels=56 * 56, max_pixels=168 * 168)


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("hw", [(300, 400), (168, 168), (56, 56), (20, 500), (1000, 37)])
def test_pad_count_matches_processor_grid(hw, tiny_tokenizer):
    image = _image(*hw)
    reference = Qwen2VLImageProcessorPil(min_pixels=QWEN_VISION.min_pixels, max_pixels=QWEN_VISION.max_pixels)
    grid = reference(images=[image], return_tensors="np")["image_grid_thw"][0]
    assert render.image_grid(*hw, QWEN_VISION) == tuple(grid)
    n = int(np.prod(grid)) // 4
    assert render.num_image_tokens(*hw, QWEN_VISION) == n
    pixel_values, _ = preprocess(image, min_pixels=QWEN_VISION.min_pixels, max_pixels=QWEN_VISION.max_pixels)
    assert pixel_values.shape[0] == 4 * n

    chunk = render.render_prompt([protocol.question_turn("q?", image)], tiny_tokenizer, QWEN_VISION)
    ids = chunk.token_ids.tolist()
    start, end = ids.index(3), ids.index(4)
    assert ids[start + 1:end] == [5] * n and ids.count(5) == n
    assert chunk.images[0] is image


def test_tiny_world_sizes():
    assert render.num_image_tokens(168, 168, TINY_VISION) == 36
    assert render.num_image_tokens(56, 56, TINY_VISION) == 4


def _conversation():
    scene, crop = _image(300, 400, 1), _image(56, 84, 2)
    turns = [
        protocol.Turn("system", (protocol.system_prompt(),)),
        protocol.question_turn("Who founded the company whose emblem is at the top left?", scene),
        protocol.assistant_turn(protocol.format_action(Gaze((10, 12, 90, 80)), "The emblem is small.")),
        protocol.observation_turn("1. Kavor Lin: a maker of lamps.\n2. Sudra: a bank.", crop),
        protocol.assistant_turn(protocol.format_action(Answer("Ida Merren"), "Kavor Lin it is.")),
    ]
    messages = [
        {"role": "system", "content": protocol.system_prompt()},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": turns[1].parts[1]}]},
        {"role": "assistant", "content": turns[2].text},
        {"role": "user", "content": [{"type": "text", "text": "<information>"}, {"type": "image"},
                                     {"type": "text", "text": turns[3].parts[2]}]},
        {"role": "assistant", "content": turns[4].text},
    ]
    return turns, messages, [scene, crop]


def _hf_ids(hf, messages, images, vision, add_generation_prompt):
    """What Qwen2-VL's processor gives: chat template, then each image pad expanded to its grid."""
    text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    pieces = text.split("<|image_pad|>")
    assert len(pieces) == len(images) + 1
    expanded = pieces[0]
    for image, piece in zip(images, pieces[1:]):
        expanded += "<|image_pad|>" * render.num_image_tokens(*image.shape[:2], vision) + piece
    return hf(expanded, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("which", ["qwen", "tiny"])
def test_render_equals_chat_template(which, qwen_tokenizer, tiny_tokenizer):
    tokenizer = qwen_tokenizer if which == "qwen" else tiny_tokenizer
    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend, chat_template=CHAT_TEMPLATE)
    turns, messages, images = _conversation()

    chunks = render.render(turns, tokenizer, QWEN_VISION)
    assert [c.role for c in chunks] == ["prompt", "assistant", "observation", "assistant", "end"]
    ids = np.concatenate([c.token_ids for c in chunks]).tolist()
    assert ids == _hf_ids(hf, messages, images, QWEN_VISION, add_generation_prompt=False)
    assert [len(c.images) for c in chunks] == [1, 0, 1, 0, 0]

    # Awaiting the next assistant turn: ends in the generation prompt.
    partial = render.render(turns[:4], tokenizer, QWEN_VISION)
    partial_ids = np.concatenate([c.token_ids for c in partial]).tolist()
    assert partial_ids == _hf_ids(hf, messages[:4], images, QWEN_VISION, add_generation_prompt=True)


def test_real_qwen_ids_at_boundaries(qwen_tokenizer):
    turns, _, _ = _conversation()
    chunks = render.render(turns, qwen_tokenizer, QWEN_VISION)
    prompt, obs, end = chunks[0].token_ids, chunks[2].token_ids, chunks[4].token_ids
    assert prompt[0] == 151644 and prompt[-3:].tolist() == [151644, 77091, 198]  # <|im_start|>assistant\n
    assert obs[:3].tolist() == [151645, 198, 151644]  # closes the assistant turn first
    assert end.tolist() == [151645, 198]
    assert (prompt == 151655).sum() == 154  # 300x400 -> 308x392 -> 22x28 patches -> 154 tokens


def test_incremental_equals_whole(tiny_tokenizer):
    turns, _, _ = _conversation()
    whole = render.render(turns, tiny_tokenizer, TINY_VISION)
    prompt = render.render_prompt(turns[:2], tiny_tokenizer, TINY_VISION)
    observation = render.render_observation(turns[3], tiny_tokenizer, TINY_VISION)
    np.testing.assert_array_equal(whole[0].token_ids, prompt.token_ids)
    np.testing.assert_array_equal(whole[2].token_ids, observation.token_ids)
    mask = render.loss_mask(whole)
    ids = np.concatenate([c.token_ids for c in whole])
    assert tiny_tokenizer.decode(ids[mask]) == turns[2].text + turns[4].text
    assert not np.any(ids[mask] == 5)


def test_render_rejects_bad_conversations(tiny_tokenizer):
    with pytest.raises(ValueError):
        render.render([protocol.assistant_turn("x")], tiny_tokenizer, TINY_VISION)
    with pytest.raises(ValueError):
        render.render([protocol.Turn("user", ("q",)), protocol.Turn("assistant", ("a", _image(28, 28)))],
                      tiny_tokenizer, TINY_VISION)
