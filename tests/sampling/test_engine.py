"""The engine against transformers generate and against full forwards of the whole sequence.

Tests that take `family` run on Qwen2.5-VL and Qwen3-VL (DeepStack features travel with the
chunk's image-pad tokens); the rest on Qwen2.5-VL, the engine's code being the same for both.
"""

import jax
import numpy as np
import pytest
import torch

from gog_jax.models.qwen2_5_vl import vision_metadata
from gog_jax.sampling import Engine, EngineError, SamplingParams, programs
from tests.models import hf_reference as ref

HF_CONFIGS = {"qwen2_5_vl": ref.hf_config, "qwen3_vl": ref.qwen3_config}
FAMILIES = pytest.mark.parametrize("family", sorted(HF_CONFIGS))


@pytest.fixture(scope="module")
def pairs():
    """family -> (transformers model, ours with its weights), each built on first use."""
    built = {}

    def get(family: str):
        if family not in built:
            hf = ref.hf_model(HF_CONFIGS[family](), seed=11)
            built[family] = hf, ref.ours_from_hf(hf)
        return built[family]
    return get


@pytest.fixture(scope="module")
def pair(pairs):
    return pairs("qwen2_5_vl")


def _hf_greedy(hf, request, max_new, stop_at_eos):
    ids = torch.as_tensor(np.asarray(request["input_ids"]))[None]
    kwargs = dict(input_ids=ids, mm_token_type_ids=(ids == ref.IMAGE_TOKEN).int(), max_new_tokens=max_new,
                  do_sample=False)
    if not stop_at_eos:
        kwargs["min_new_tokens"] = max_new
    if "pixel_values" in request:
        kwargs.update(pixel_values=torch.as_tensor(request["pixel_values"]),
                      image_grid_thw=torch.as_tensor(request["image_grid_thw"]))
    out = hf.generate(**kwargs)[0, ids.shape[1]:].numpy()
    if stop_at_eos and (out == hf.config.text_config.eos_token_id).any():
        out = out[:np.argmax(out == hf.config.text_config.eos_token_id) + 1]
    return out


@FAMILIES
def test_greedy_equals_transformers_generate(pairs, family):
    """Text and images, mixed prompt lengths, more requests than slots (slots are refilled)."""
    hf, ours = pairs(family)
    rng = np.random.default_rng(0)
    dim = ours.config.vision.patch_dim
    requests = [dict(input_ids=rng.integers(10, 256, n)) for n in (3, 17, 40, 9)]
    requests += [ref.image_request(rng, np.array([[1, 4, 6]]), [3, 4], dim),
                 ref.image_request(rng, np.array([[1, 6, 4], [1, 4, 4]]), [2, 3, 5], dim)]
    engine = Engine(ours, num_slots=2, max_seq_len=160, decode_steps=8)
    outs = engine.generate(requests, SamplingParams(temperature=0.0, max_new_tokens=24, ignore_eos=True))
    for request, out in zip(requests, outs):
        np.testing.assert_array_equal(out.token_ids, _hf_greedy(hf, request, 24, stop_at_eos=False))
        assert out.finish_reason == "length"


def test_greedy_stops_at_eos_like_transformers(pair):
    hf, ours = pair
    eos = hf.config.text_config.eos_token_id
    rng = np.random.default_rng(1)
    engine = Engine(ours, num_slots=4, max_seq_len=200, decode_steps=16)
    requests = [dict(input_ids=rng.integers(10, 256, 6)) for _ in range(6)]
    # make eos likely: bias the sampler by asking for it as the greedy continuation of itself
    requests += [dict(input_ids=np.array([eos] * 3 + [20, 30]))]
    outs = engine.generate(requests, SamplingParams(temperature=0.0, max_new_tokens=60))
    for request, out in zip(requests, outs):
        theirs = _hf_greedy(hf, request, 60, stop_at_eos=True)
        np.testing.assert_array_equal(out.token_ids, theirs)
        assert out.finish_reason == ("stop" if theirs[-1] == eos and len(theirs) <= 60 else "length")


def _full_logits(model, tokens, pixels=None, grids=None):
    ids = np.asarray(tokens)[None]
    return np.asarray(model(ids, pixel_values=pixels, image_grid_thw=grids))[0]


def _text_logits(model, tokens):
    """Full forward of a text-only trajectory (sampled ids are text even if one equals image-pad)."""
    ids = np.asarray(tokens, np.int32)[None]
    positions = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int32), (3, 1, ids.shape[1]))
    hidden, _ = model.forward(ids, positions)
    return np.asarray(model.logits(hidden))[0]


@FAMILIES
def test_append_with_an_image_equals_full_forward(pairs, family):
    _, ours = pairs(family)
    rng = np.random.default_rng(2)
    dim = ours.config.vision.patch_dim
    engine = Engine(ours, num_slots=2, max_seq_len=256, decode_steps=8)
    first = ref.image_request(rng, np.array([[1, 4, 4]]), [3, 2], dim)
    session = engine.open(first["input_ids"], SamplingParams(temperature=0.7, max_new_tokens=5, ignore_eos=True),
                          pixel_values=first["pixel_values"], image_grid_thw=first["image_grid_thw"])
    while not engine.step():
        pass
    grids = np.array([[1, 6, 8]])
    chunk = ref.image_request(rng, grids, [2, 4], dim)
    engine.append(session, chunk["input_ids"], pixel_values=chunk["pixel_values"], image_grid_thw=grids)
    all_pixels = np.concatenate([first["pixel_values"], chunk["pixel_values"]])
    all_grids = np.concatenate([first["image_grid_thw"], grids])
    full = _full_logits(ours, session.tokens, all_pixels, all_grids)
    np.testing.assert_allclose(np.asarray(engine.state.logits[session.slot]), full[-1], atol=1e-4)
    engine.resume(session)
    while not engine.step():
        pass
    # the sampled continuation's log-probs equal the full forward's log-softmax (1e-4)
    full = _full_logits(ours, session.tokens, all_pixels, all_grids)
    logp = jax.nn.log_softmax(full, axis=-1)
    n = len(session.new_tokens)
    expected = logp[np.arange(len(session.tokens) - n - 1, len(session.tokens) - 1), session.new_tokens]
    np.testing.assert_allclose(session.new_logprobs, expected, atol=1e-4)
    assert session.stats["prefilled"] + session.stats["appended"] + session.stats["decoded"] == len(session.tokens)


def test_open_many_prefills_together_like_a_full_forward(pair):
    """Prompts opened in one call, in pieces (chunk buckets smaller than the prompts), images
    spread over pieces and prompts, a bad request among them: each good one's next-token logits
    equal a full forward over its prompt, the bad one gets its error in its place; so does a
    request that finds no free slot."""
    _, ours = pair
    rng = np.random.default_rng(12)
    engine = Engine(ours, num_slots=4, max_seq_len=128, decode_steps=4, chunk_buckets=(8, 16))
    requests = [dict(input_ids=rng.integers(10, 256, 37)),
                ref.image_request(rng, np.array([[1, 4, 6], [1, 4, 4]]), [5, 9, 2]),
                dict(input_ids=np.zeros(0, np.int64)),
                ref.image_request(rng, np.array([[1, 4, 4]]), [1, 3])]
    opened = engine.open_many(requests, SamplingParams(temperature=0.0, max_new_tokens=4))
    assert isinstance(opened[2], EngineError) and "Empty prompt" in str(opened[2])
    for request, session in zip(requests, opened):
        if request is requests[2]:
            continue
        full = _full_logits(ours, request["input_ids"], request.get("pixel_values"), request.get("image_grid_thw"))
        np.testing.assert_allclose(np.asarray(engine.state.logits[session.slot]), full[-1], atol=1e-4)
        assert session.decoding and session.stats["prefilled"] == len(request["input_ids"])
    assert sorted(engine.sessions) == [0, 1, 2]
    # one slot left: a seed that is no integer fails alone, the next request takes the slot, the last finds none
    more = [dict(input_ids=rng.integers(10, 256, 5), seed=1.5)] + [dict(input_ids=rng.integers(10, 256, 5))] * 2
    bad_seed, session, no_slot = engine.open_many(more, SamplingParams(temperature=0.0, max_new_tokens=4))
    assert isinstance(bad_seed, EngineError) and "seed" in str(bad_seed)
    assert session.slot == 3 and isinstance(no_slot, EngineError) and "No free slot" in str(no_slot)
    assert sorted(engine.sessions) == [0, 1, 2, 3]


def test_append_many_appends_together_like_full_forwards(pair, monkeypatch):
    """Observations appended in one call (images among them, in pieces, and in two rows of the
    vision call): each session's next-token logits equal a full forward over its whole
    conversation; a bad request (still decoding, a session named twice, too long) gets its error
    and leaves its session as it was."""
    _, ours = pair
    rng = np.random.default_rng(13)
    encoded = []  # [G, P] of each vision call
    encode = programs.encode

    def spy(graph, params, patches, meta):
        encoded.append(patches.shape[:2])
        return encode(graph, params, patches, meta)
    monkeypatch.setattr(programs, "encode", spy)
    engine = Engine(ours, num_slots=4, max_seq_len=160, decode_steps=4, chunk_buckets=(8, 16))
    firsts = [ref.image_request(rng, np.array([[1, 4, 6]]), [2, 3]), dict(input_ids=rng.integers(10, 256, 9)),
              ref.image_request(rng, np.array([[1, 4, 4]]), [4, 1])]
    params = SamplingParams(temperature=0.0, max_new_tokens=3, ignore_eos=True)
    sessions = engine.open_many(firsts, params)
    while any(s.decoding for s in sessions):
        engine.step()
    chunks = [ref.image_request(rng, np.array([[1, 6, 8], [1, 4, 4]]), [3, 20, 2]),
              dict(input_ids=rng.integers(10, 256, 30)), ref.image_request(rng, np.array([[1, 4, 4]]), [1, 2])]
    errors = engine.append_many([(s, c) for s, c in zip(sessions, chunks)]
                                + [(sessions[1], dict(input_ids=[5]))])  # named twice
    assert errors[:3] == [None] * 3 and "twice" in str(errors[3])
    # rows as long as the largest image's bucket (48 -> 64 patches): 24 + 16 share one; 48 + 16, then 16
    assert encoded == [(1, 64), (2, 64)]
    for first, chunk, session in zip(firsts, chunks, sessions):
        images = [r for r in (first, chunk) if "pixel_values" in r]
        pixels = np.concatenate([r["pixel_values"] for r in images]) if images else None
        grids = np.concatenate([r["image_grid_thw"] for r in images]) if images else None
        assert len(session.tokens) == len(first["input_ids"]) + 3 + len(chunk["input_ids"])
        full = _full_logits(ours, session.tokens, pixels, grids)
        np.testing.assert_allclose(np.asarray(engine.state.logits[session.slot]), full[-1], atol=1e-4)
    engine.resume_many(sessions[:1], params)
    before = list(sessions[1].tokens)
    decoding, too_long = engine.append_many([(sessions[0], dict(input_ids=[7])),
                                             (sessions[1], dict(input_ids=rng.integers(10, 256, 200)))])
    assert "still decoding" in str(decoding) and "max_seq_len" in str(too_long)
    assert sessions[1].tokens == before and sessions[1].stats["appended"] == 30


def test_sampled_logprobs_equal_full_forward(pair):
    _, ours = pair
    rng = np.random.default_rng(3)
    engine = Engine(ours, num_slots=3, max_seq_len=128, decode_steps=8)
    requests = [dict(input_ids=rng.integers(10, 256, n)) for n in (4, 11, 23)]
    params = SamplingParams(temperature=1.3, top_k=50, top_p=0.9, max_new_tokens=12, ignore_eos=True)
    for request, out in zip(requests, engine.generate(requests, params)):
        seq = np.concatenate([request["input_ids"], out.token_ids])
        logp = np.asarray(jax.nn.log_softmax(_text_logits(ours, seq), axis=-1))
        start = len(request["input_ids"]) - 1
        np.testing.assert_allclose(out.logprobs, logp[start + np.arange(12), out.token_ids], atol=1e-4)


def test_seeds_reproduce_and_differ(pair):
    _, ours = pair
    rng = np.random.default_rng(4)
    requests = [dict(input_ids=rng.integers(10, 256, 7), seed=s) for s in (1, 1, 2)]
    engine = Engine(ours, num_slots=2, max_seq_len=96, decode_steps=8)
    params = SamplingParams(temperature=1.0, max_new_tokens=16, ignore_eos=True)
    requests[1]["input_ids"] = requests[0]["input_ids"]
    requests[2]["input_ids"] = requests[0]["input_ids"]
    a, b, c = engine.generate(requests, params)
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    assert not np.array_equal(a.token_ids, c.token_ids)
    engine = Engine(ours, num_slots=3, max_seq_len=96, decode_steps=4)
    again = engine.generate(requests[:1], params)[0]
    np.testing.assert_array_equal(again.token_ids, a.token_ids)  # independent of slots and call sizes
    seeds = (0, 2 ** 32 + 3, -1)  # keys derived together are jax.random.key's, also beyond 32 bits
    opened = engine.open_many([dict(requests[0], seed=seed) for seed in seeds], params)
    for seed, session in zip(seeds, opened):
        np.testing.assert_array_equal(session.key, jax.random.key_data(jax.random.key(seed)))


def test_bad_requests_fail_alone(pair):
    _, ours = pair
    rng = np.random.default_rng(5)
    good = dict(input_ids=rng.integers(10, 256, 6))
    bad_grid = ref.image_request(rng, np.array([[1, 4, 4]]), [2, 2])
    bad_grid["image_grid_thw"] = np.array([[1, 4, 6]])
    requests = [dict(input_ids=np.zeros(0, np.int64)), good, dict(input_ids=rng.integers(10, 256, 500)), bad_grid]
    engine = Engine(ours, num_slots=2, max_seq_len=64, decode_steps=8)
    outs = engine.generate(requests, SamplingParams(temperature=0.0, max_new_tokens=8, ignore_eos=True))
    assert [o.finish_reason for o in outs] == ["error", "length", "error", "error"]
    assert "Empty prompt" in outs[0].error
    assert "max_seq_len=64" in outs[2].error
    assert "patches but pixel_values has 16" in outs[3].error
    alone = Engine(ours, num_slots=1, max_seq_len=64).generate([good], SamplingParams(temperature=0.0,
                                                                                      max_new_tokens=8,
                                                                                      ignore_eos=True))
    np.testing.assert_array_equal(outs[1].token_ids, alone[0].token_ids)


def test_stop_sequences_min_new_tokens_and_stop_ids(pair):
    _, ours = pair
    rng = np.random.default_rng(6)
    prompt = rng.integers(10, 256, 9)
    engine = Engine(ours, num_slots=1, max_seq_len=128, decode_steps=4)
    free = engine.generate([dict(input_ids=prompt)], SamplingParams(temperature=0.0, max_new_tokens=20,
                                                                   ignore_eos=True))[0].token_ids
    target = tuple(int(t) for t in free[5:7])  # a two-token sequence the greedy path emits
    params = SamplingParams(temperature=0.0, max_new_tokens=20, ignore_eos=True, stop_sequences=(target,))
    out = engine.generate([dict(input_ids=prompt)], params)[0]
    first = next(i for i in range(1, len(free)) if tuple(free[i - 1:i + 1]) == target)
    np.testing.assert_array_equal(out.token_ids, free[:first + 1])
    assert out.finish_reason == "stop"
    stop_id = int(free[2])
    out = engine.generate([dict(input_ids=prompt)], SamplingParams(
        temperature=0.0, max_new_tokens=20, ignore_eos=True, stop_token_ids=(stop_id,)))[0]
    assert out.token_ids[-1] == stop_id and stop_id not in out.token_ids[:-1]
    out = engine.generate([dict(input_ids=prompt)], SamplingParams(
        temperature=0.0, max_new_tokens=20, ignore_eos=True, stop_token_ids=(stop_id,), min_new_tokens=19))[0]
    assert len(out.token_ids) >= 19 and stop_id not in out.token_ids[:18]


def test_group_fork_prefills_once(pair):
    _, ours = pair
    prompt = np.random.default_rng(7).integers(10, 256, 30)
    engine = Engine(ours, num_slots=4, max_seq_len=128, decode_steps=8)
    head = engine.open(prompt, SamplingParams(temperature=1.0, max_new_tokens=10, ignore_eos=True))
    for n, seeds in ((0, None), (4, [1, 2])):  # no group; fewer seeds than copies
        with pytest.raises(EngineError):
            engine.fork(head, n, seeds)
    group = engine.fork(head, 4)
    state = jax.device_get(engine.state)
    for seed, member in enumerate(group[1:], 1):  # the head's settings, a key of its own
        expected = jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(head.key), seed))
        np.testing.assert_array_equal(member.key, expected)
        np.testing.assert_array_equal(state.keys[member.slot], expected)
        for name in ("active", "budget", "min_new", "temperature", "top_k", "top_p", "stop_ids", "lengths"):
            np.testing.assert_array_equal(getattr(state, name)[member.slot], getattr(state, name)[head.slot])
    done = []
    while len(done) < 4:
        done += engine.step()
    assert sum(s.stats["prefilled"] for s in group) == len(prompt)
    outputs = {tuple(s.new_tokens) for s in group}
    assert len(outputs) > 1  # different keys per member
    for s in group:  # each member is a correct continuation of the shared prompt
        seq = np.concatenate([prompt, s.new_tokens])
        logp = np.asarray(jax.nn.log_softmax(_text_logits(ours, seq), axis=-1))
        np.testing.assert_allclose(s.new_logprobs, logp[len(prompt) - 1 + np.arange(10), s.new_tokens], atol=1e-4)


def test_compilations_bounded_by_buckets(pair):
    _, ours = pair
    rng = np.random.default_rng(8)
    buckets = (16, 32, 64)
    engine = Engine(ours, num_slots=4, max_seq_len=128, decode_steps=8, chunk_buckets=buckets)
    for fn in (programs.append, programs.decode, programs.configure):
        fn.clear_cache()
    requests = [dict(input_ids=rng.integers(10, 256, int(n))) for n in rng.integers(1, 100, 50)]
    lengths = rng.integers(1, 20, 50)
    outs = [engine.generate([r], SamplingParams(temperature=0.8, max_new_tokens=int(m)))[0]
            for r, m in zip(requests[:10], lengths[:10])]
    outs += engine.generate(requests[10:], SamplingParams(temperature=0.8, max_new_tokens=16))
    assert all(o.finish_reason in ("stop", "length") for o in outs)
    # prefills: one program per (rows bucket, chunk bucket, attention window bucket) at most
    assert programs.append._cache_size() <= len(engine.rows_buckets) * len(buckets) * len(engine.window_buckets)
    assert programs.decode._cache_size() == 1 and programs.configure._cache_size() == 1


def test_vision_metadata_padding_is_harmless(pair):
    """Padded patches (a bucket) change nothing in the real images' features."""
    _, ours = pair
    rng = np.random.default_rng(9)
    grids = np.array([[1, 4, 6]])
    pixels = rng.standard_normal((24, 1176)).astype(np.float32)
    exact = ours.encode_images(pixels, vision_metadata(grids, ours.config.vision))
    padded = ours.encode_images(np.concatenate([pixels, np.ones((40, 1176), np.float32)]),
                                vision_metadata(grids, ours.config.vision, 64))
    np.testing.assert_allclose(np.asarray(padded)[:6], np.asarray(exact), atol=1e-6)
