"""The engine on parameters sharded over a (2, 2, 2) mesh: the decode state is sharded too (KV
cache by slots and kv heads), outputs equal one device's (images included, in several rows of
one vision call), and no program gathers the cache."""

import functools
import re

import jax
import numpy as np
from flax import nnx

from gog_jax import sharding
from gog_jax.models.qwen2_5_vl import Qwen25VL, presets
from gog_jax.sampling import Engine, SamplingParams, programs
from tests.models import hf_reference as ref

SLOTS = 4


def _sharded(engine: Engine, model: Qwen25VL) -> Engine:
    mesh = sharding.make_mesh((2, 2, 2))
    state = nnx.state(model)
    engine.update_params(sharding.put(state, sharding.state_shardings(state, mesh)))
    return engine


def _session_tokens(engine: Engine, prompt, observation) -> list[list[int]]:
    """Open, fork into 3, decode, append an observation (with an image) to each, decode again."""
    params = SamplingParams(temperature=1.0, max_new_tokens=6, ignore_eos=True)
    group = engine.fork(engine.open(prompt, params, seed=7), 3)

    def decode_all():
        done = []
        while len(done) < len(group):
            done += engine.step()

    decode_all()
    for s in group:
        engine.append(s, observation["input_ids"], pixel_values=observation["pixel_values"],
                      image_grid_thw=observation["image_grid_thw"])
        engine.resume(s)
    decode_all()
    return [s.tokens for s in group]


def test_sharded_state_same_outputs_and_no_cache_gathers():
    model = Qwen25VL(presets.model_config(presets.get("tiny")), rngs=nnx.Rngs(3))
    rng = np.random.default_rng(0)
    requests = [dict(input_ids=rng.integers(20, 1000, n)) for n in (5, 17, 9)]
    # the last request's two images fill two rows of the vision call (64 patches, the larger's bucket)
    requests += [ref.image_request(rng, [[1, 4, 6]], [3, 5]), ref.image_request(rng, [[1, 6, 8], [1, 4, 6]], [2, 4, 1])]
    params = SamplingParams(temperature=0.0, max_new_tokens=12, ignore_eos=True)
    prompt, observation = rng.integers(20, 1000, 11), ref.image_request(rng, [[1, 4, 4]], [2, 3])
    make = functools.partial(Engine, model, num_slots=SLOTS, max_seq_len=128, decode_steps=4)
    single = make()
    expected = single.generate(requests, params)
    expected_sessions = _session_tokens(single, prompt, observation)

    engine = _sharded(make(), model)
    k = engine.state.cache.k[0]  # [slots, kv_heads, head_dim, C]: slots over data x fsdp, heads over tensor
    layout = k.sharding
    assert len(layout.device_set) == 8
    assert layout.shard_shape(k.shape)[:2] == (SLOTS // 4, k.shape[1] // 2)
    assert engine.state.active.sharding.is_fully_replicated  # what the host reads after each call
    for a, b in zip(expected, engine.generate(requests, params)):
        np.testing.assert_array_equal(a.token_ids, b.token_ids)
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
    assert _session_tokens(engine, prompt, observation) == expected_sessions
    assert engine.state.cache.k[0].sharding.is_equivalent_to(layout, 4)  # every program kept the layout

    # a fork or a prefill moves one slot's row, never the cache: no all-gather yields all slots
    targets = np.arange(1, SLOTS, dtype=np.int32)
    keys = np.zeros((SLOTS - 1, 2), np.uint32)
    texts = [programs.fork.lower(engine.state, 0, targets, keys, engine.layout).compile().as_text()]
    tokens, positions, one = np.zeros((1, 16), np.int32), np.zeros((3, 1, 16), np.int32), np.ones(1, np.int32)
    graph = engine._graph  # pylint: disable=protected-access
    texts.append(programs.append.lower(graph, engine.params, engine.state, one, 0 * one, tokens, positions, 16 * one,
                                       16 * one, None, None, 128, engine.layout).compile().as_text())
    for text in texts:
        gathered = re.findall(r"= f32\[(\d+),[^\]]*\][^\n]* all-gather\(", text)
        assert str(SLOTS) not in gathered, gathered
    # what the host reads after a decode call is replicated: every host of a pod can read it
    state, *outputs = programs.decode(graph, engine.params, engine.state, 4, 128, 128, engine.layout)
    assert all(x.sharding.is_fully_replicated for x in (*outputs, state.active, state.finish))
