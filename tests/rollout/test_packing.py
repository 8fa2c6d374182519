"""Packing: loss masks cover assistant tokens only, and packed log-probs equal per-example forwards
(Qwen2.5-VL and Qwen3-VL, whose DeepStack rows follow the same feature index)."""

import dataclasses

import jax
import numpy as np
import pytest

from gog_jax.agent import protocol
from gog_jax.agent.render import VisionSpec
from gog_jax.models import families
from gog_jax.rollout.packing import (Example, PackConfig, Packed, fit_rows, image_inputs, loss_len_of,
                                     place_images)
from gog_jax.train.step import LossConfig, batch_logprobs
from gog_jax.world.corpus import default_tokenizer
from tests.conversations import VISION, example


@pytest.fixture(scope="module")
def setups():
    """preset -> (tokenizer, model, its VisionSpec, examples rendered for it), each built on first use."""
    built = {}

    def get(preset: str):
        if preset not in built:
            family, shapes = families.preset(preset)
            cfg = families.named(family).model_config(shapes)
            vision = VisionSpec(max_pixels=VISION.max_pixels, **families.processor(cfg))
            tokenizer = default_tokenizer()
            examples = [example(tokenizer, s, turns, crop, vision=vision) for s, (turns, crop) in
                        enumerate([(1, True), (2, False), (0, False), (2, True), (1, False)])]
            built[preset] = tokenizer, families.build(cfg), vision, examples
        return built[preset]
    return get


@pytest.fixture(scope="module")
def setup(setups):
    tokenizer, model, vision, examples = setups("tiny")
    assert vision == VISION
    return tokenizer, model, examples


def test_layout_and_masks(setup):
    tokenizer, model, examples = setup
    pack = PackConfig(rows=2, seq_len=256, image_slots=4, image_patches=48)
    packed = Packed(examples, model.config, VISION, pack)
    assert not packed.dropped and sum(packed.segments(i) for i in range(len(packed))) == len(examples)
    image_pad = model.config.image_token_id
    trained = 0
    for i in range(len(packed)):
        b = packed.batch(i)
        assert b.tokens.shape == (2, 256) and b.pixel_values.shape[:2] == (4, 48)
        targets_trained = b.targets[b.loss_mask > 0]
        # no image pads and no observation/prompt structure tokens are ever targets of the loss
        assert not np.isin(targets_trained, [image_pad, tokenizer.id_of(protocol.IM_START),
                                             tokenizer.id_of(protocol.VISION_START)]).any()
        # a target is always in the same segment as its position
        rows, cols = np.nonzero(b.loss_mask)
        assert (b.segment_ids[rows, cols + 1] == b.segment_ids[rows, cols]).all()
        trained += int(b.loss_mask.sum())
        assert int(b.loss_mask.sum()) == packed.trained_tokens(i)
    assert trained == sum(int(e.loss_mask[1:].sum()) for e in examples)


def test_mask_is_exactly_the_assistant_text(setup):
    tokenizer, model, examples = setup
    packed = Packed(examples[:1], model.config, VISION, PackConfig(rows=1, seq_len=256, image_slots=2,
                                                                   image_patches=48))
    b = packed.batch(0)
    text = tokenizer.decode(b.targets[0][b.loss_mask[0] > 0])
    assert text == "<think>step 0</think><glance/><think>done</think><answer>yes</answer>"


def test_too_long_or_too_many_images_are_dropped(setup):
    _, model, examples = setup
    limit = len(examples[2])  # the shortest (no tool turn)
    packed = Packed(examples, model.config, VISION, PackConfig(rows=2, seq_len=limit, image_slots=4,
                                                               image_patches=48))
    assert set(packed.dropped) == {e.id for e in examples} - {"ex2"}
    packed = Packed(examples, model.config, VISION, PackConfig(rows=2, seq_len=256, image_slots=1, image_patches=48))
    assert set(packed.dropped) == {"ex0", "ex3"}  # the two with a crop need 2 image slots


def test_place_images_first_fit_largest_first():
    assert place_images([144, 16, 16, 64], 2, 144) == [0, 1, 1, 1]
    assert place_images([16, 144, 16], 2, 144) == [1, 0, 1]
    assert place_images([100, 100], 2, 144) == [0, 1]
    assert place_images([100, 100], 1, 144) is None  # two slots needed
    assert place_images([145], 4, 144) is None  # larger than a slot
    assert place_images([], 0, 144) == []


# attention_block 48: blocks that do not divide the row; image_patches 48: crops (16 patches)
# share slots, 64: a question image (48) and a crop share one too
@pytest.mark.parametrize("preset,attention_block,loss_len,image_patches", [("tiny", 0, 0, 48), ("tiny", 48, 40, 64),
                                                                           ("qwen3_vl_tiny", 48, 0, 64)])
def test_packed_logprobs_equal_unpacked_forward(setups, preset, attention_block, loss_len, image_patches):
    """Log-probs at the loss positions (`loss_len` 0: room for a row's every position) equal a forward
    of each example alone, whether images have a vision slot each or share one."""
    _, model, vision, examples = setups(preset)
    packed = Packed(examples, model.config, vision, PackConfig(rows=2, seq_len=256, image_slots=4,
                                                               image_patches=image_patches, loss_len=loss_len))
    assert not packed.dropped
    patches = [[len(image_inputs(im, vision)[0]) for r in rows for j in r for im in packed.examples[j].images]
               for rows in packed.layout]
    slots = [place_images(p, 4, image_patches) for p in patches]
    assert any(len(set(w)) < len(w) for w in slots)  # some slot holds several images
    assert max(np.bincount(w, weights=p).max() for w, p in zip(slots, patches)) > 48 or image_patches == 48
    cfg = LossConfig(vocab_chunk=300, attention_block=attention_block)
    for i in range(len(packed)):
        b = packed.batch(i)
        assert b.loss_index.shape == (2, loss_len or 256)
        gathered = np.asarray(jax.jit(batch_logprobs, static_argnums=2)(model, b, cfg)[0])
        lp = np.full(b.tokens.shape, np.nan, np.float32)  # [R, T] at the loss positions, NaN elsewhere
        for r in range(2):
            where = b.loss_index[r][:int(b.loss_mask[r].sum())]
            assert (b.loss_mask[r, where] > 0).all() and (b.loss_mask[r, b.loss_index[r][len(where):]] == 0).all()
            lp[r, where] = gathered[r, :len(where)]
        for r, row in enumerate(packed.layout[i]):
            start = 0
            for index in row:
                ex = packed.examples[index]
                ids = ex.token_ids[None]
                processed = [image_inputs(im, vision) for im in ex.images]
                logits = np.asarray(model(ids, pixel_values=np.concatenate([p for p, _ in processed]),
                                          image_grid_thw=np.stack([g for _, g in processed])))[0]
                ref = jax.nn.log_softmax(logits[:-1])[np.arange(len(ids[0]) - 1), ids[0, 1:]]
                mine, trained = lp[r, start:start + len(ex) - 1], ex.loss_mask[1:]
                np.testing.assert_allclose(mine[trained], ref[trained], atol=1e-4)
                start += len(ex)


def test_loss_positions_per_row_stay_within_loss_len(setup):
    """A row holds examples only while their loss positions fit `loss_len`; an example with more
    than that alone is dropped with its reason, not truncated."""
    _, model, examples = setup
    counts = [int(e.loss_mask[1:].sum()) for e in examples]  # 17, 25, 9, 25, 17
    loss_len = 24  # fits three of them, at most two a row (17 + 9 does not fit either)
    pack = PackConfig(rows=2, seq_len=256, image_slots=4, image_patches=48, loss_len=loss_len)
    packed = Packed(examples, model.config, VISION, pack)
    assert packed.reasons == {"too_many_loss_tokens": 2}
    assert sorted(packed.dropped) == sorted(e.id for e, n in zip(examples, counts) if n > loss_len)
    for i in range(len(packed)):
        for row in packed.layout[i]:
            assert sum(int(packed.examples[j].loss_mask[1:].sum()) for j in row) <= loss_len
        assert packed.batch(i).loss_index.shape == (2, loss_len)
    assert len(packed) == 2  # without the budget the three fit one batch of two rows of 256
    assert sum(packed.trained_tokens(i) for i in range(len(packed))) == sum(n for n in counts if n <= loss_len)


def test_stray_image_pad_is_dropped_not_crashed(setup):
    """A sampled <|image_pad|> with no image behind it (an RL rollout can emit one) is dropped."""
    _, model, examples = setup
    bad = dataclasses.replace(examples[2], token_ids=np.append(examples[2].token_ids, model.config.image_token_id),
                              loss_mask=np.append(examples[2].loss_mask, True), id="stray")
    packed = Packed([bad, examples[1]], model.config, VISION, PackConfig(rows=1, seq_len=256, image_slots=4,
                                                                         image_patches=48))
    assert packed.dropped == ["stray"] and packed.reasons == {"image_tokens_mismatch": 1}
    assert packed.batch(0).tokens.shape == (1, 256)


def _text_example(length: int, index: int) -> Example:
    return Example(np.full(length, 7, np.int32), np.ones(length, bool), [], id=f"{length}-{index}")


def test_seeded_order_mixes_lengths_in_every_batch(setup):
    """Longest-first packing fills a batch with one length (in SFT data, one kind of episode); a
    seeded order makes each batch a sample of the whole set, and is reproducible."""
    _, model, _ = setup
    examples = [_text_example(length, i) for i in range(200) for length in (20, 120)]
    pack = PackConfig(rows=4, seq_len=512, image_slots=1, image_patches=48, max_segments=32)

    def long_share(packed):  # per batch: the share of its examples that are long
        return np.array([np.mean([len(packed.examples[i]) == 120 for row in batch for i in row])
                         for batch in packed.layout])

    assert long_share(Packed(examples, model.config, VISION, pack)).min() == 0.0  # the tail: short only
    seeded = Packed(examples, model.config, VISION, pack, seed=0)
    assert 0.25 < long_share(seeded).min() and long_share(seeded).max() < 0.85, long_share(seeded)
    assert seeded.layout == Packed(examples, model.config, VISION, pack, seed=0).layout
    assert seeded.layout != Packed(examples, model.config, VISION, pack, seed=1).layout
    assert sorted(i for batch in seeded.layout for row in batch for i in row) == list(range(len(examples)))


def test_batch_cache_keeps_built_batches_within_its_budget(setup):
    _, model, examples = setup
    pack = PackConfig(rows=1, seq_len=256, image_slots=4, image_patches=48)
    plain = Packed(examples, model.config, VISION, pack)
    size = sum(x.nbytes for x in jax.tree.leaves(plain.batch(0)))
    cached = Packed(examples, model.config, VISION, pack, cache_bytes=int(1.5 * size))  # room for one
    assert len(plain) >= 2 and cached.batch(0) is cached.batch(0) and cached.batch(1) is not cached.batch(1)
    for i in range(len(plain)):
        jax.tree.map(np.testing.assert_array_equal, cached.batch(i), plain.batch(i))


def test_prefetch_yields_the_batches_of_each_list_in_order(setup):
    _, model, examples = setup
    packed = Packed(examples, model.config, VISION, PackConfig(rows=1, seq_len=256, image_slots=4, image_patches=48))
    lists = [[2], [0, 1], [1], [0], [2, 0]][:len(packed) + 2]
    lists = [[i % len(packed) for i in indices] for indices in lists]
    got = list(packed.prefetch(iter(lists), ahead=2))
    assert [len(batches) for batches in got] == [len(indices) for indices in lists]
    for indices, batches in zip(lists, got):
        for i, batch in zip(indices, batches):
            jax.tree.map(np.testing.assert_array_equal, batch, packed.batch(i))


def test_prefetch_raises_a_build_error_in_the_loop(setup):
    _, model, examples = setup
    packed = Packed(examples, model.config, VISION, PackConfig(rows=1, seq_len=256, image_slots=4, image_patches=48))
    with pytest.raises(IndexError):
        list(packed.prefetch([[0], [len(packed) + 5]]))


def test_fit_rows_keeps_the_tokens_in_rows_as_short_as_the_data_allows():
    pack = PackConfig(rows=4, seq_len=768, image_slots=30, image_patches=144)
    assert fit_rows(pack, [100, 476, 300]) == dataclasses.replace(pack, rows=6, seq_len=512)
    assert fit_rows(pack, [90]) == dataclasses.replace(pack, rows=24, seq_len=128)
    assert fit_rows(pack, [700]) == pack
    assert fit_rows(pack, [5000]) == pack  # too long for any row: still dropped by Packed, as before
    assert fit_rows(pack, [600]) == dataclasses.replace(pack, rows=4, seq_len=640)  # 3072 // 640
    # the loss positions keep their share of the row (a multiple of 8)
    halves = dataclasses.replace(pack, loss_len=loss_len_of(768, 0.5))
    assert halves.loss_len == 384 and loss_len_of(768, 1.0) == 0 and loss_len_of(100, 0.3) == 32
    assert fit_rows(halves, [100, 476, 300]) == dataclasses.replace(pack, rows=6, seq_len=512, loss_len=256)
    assert fit_rows(halves, [90]).loss_len == 64
    with pytest.raises(ValueError, match="share"):
        loss_len_of(512, 0.0)
