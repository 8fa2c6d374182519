"""The engine on parameters sharded over a (2, 2, 2) mesh: the same greedy tokens as on one device."""

import jax
import numpy as np
from flax import nnx

from gog_jax import sharding
from gog_jax.models.qwen2_5_vl import Qwen25VL, presets
from gog_jax.sampling import Engine, SamplingParams


def test_sharded_params_same_greedy_output():
    model = Qwen25VL(presets.model_config(presets.get("tiny")), rngs=nnx.Rngs(3))
    rng = np.random.default_rng(0)
    requests = [dict(input_ids=rng.integers(20, 1000, n)) for n in (5, 17, 9)]
    params = SamplingParams(temperature=0.0, max_new_tokens=12, ignore_eos=True)
    single = Engine(model, num_slots=4, max_seq_len=128, decode_steps=4).generate(requests, params)

    engine = Engine(model, num_slots=4, max_seq_len=128, decode_steps=4)
    mesh = sharding.make_mesh((2, 2, 2))
    state = nnx.state(model)
    engine.update_params(sharding.put(state, sharding.state_shardings(state, mesh)))
    assert len(jax.tree.leaves(engine.state)[0].sharding.device_set) == 8
    sharded = engine.generate(requests, params)
    for a, b in zip(single, sharded):
        np.testing.assert_array_equal(a.token_ids, b.token_ids)
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
