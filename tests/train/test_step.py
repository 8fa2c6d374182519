"""The learner: sharded (2, 2, 2) steps equal single-device steps; compilation once per batch shape."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gog_jax import sharding
from gog_jax.models.qwen2_5_vl import Qwen25VL, presets
from gog_jax.rollout.packing import PackConfig, Packed
from gog_jax.train import optim
from gog_jax.train.step import Learner, LossConfig
from gog_jax.world.corpus import default_tokenizer
from tests.conversations import VISION, example

PACK = PackConfig(rows=4, seq_len=256, image_slots=4, image_patches=48, loss_len=32)  # LM head on 32 a row


def _packed() -> Packed:
    tokenizer = default_tokenizer()
    cfg = presets.model_config(presets.get("tiny"))
    examples = [example(tokenizer, s, turns, crop, advantage=a) for s, (turns, crop, a) in
                enumerate([(1, True, 1.0), (2, False, -0.5), (0, False, 0.7), (2, True, -1.2), (1, False, 0.3)])]
    return Packed(examples, cfg, VISION, PACK)


@pytest.fixture(scope="module")
def packed():
    return _packed()


def _learner(kind: str, mesh_shape, **loss):
    model = Qwen25VL(presets.model_config(presets.get("tiny")), rngs=nnx.Rngs(0))
    devices = jax.devices()[:int(np.prod(mesh_shape))]
    opt = optim.make_optimizer(learning_rate=1e-3, warmup_steps=0, total_steps=10, weight_decay=0.0, clip_norm=1.0)
    return Learner(model, opt, LossConfig(kind=kind, vocab_chunk=300, **loss),
                   sharding.make_mesh(mesh_shape, devices=devices), reference=bool(loss.get("kl_coef")))


@pytest.mark.parametrize("kind,loss", [("sft", {}), ("grpo", {"kl_coef": 0.01, "aggregation": "seq_mean_token_mean"})])
def test_sharded_step_equals_single_device(packed, kind, loss):
    assert jax.device_count() >= 8
    batches = [packed.batch(i) for i in range(len(packed))]
    total = sum(packed.trained_tokens(i) for i in range(len(packed)))
    scales = [packed.trained_tokens(i) / total for i in range(len(packed))]
    single, sharded = _learner(kind, (1, 1, 1), **loss), _learner(kind, (2, 2, 2), **loss)
    # the sharded learner's parameters really are spread over the mesh
    assert any(len(x.sharding.device_set) > 1 and not x.sharding.is_fully_replicated
               for x in jax.tree.leaves(sharded.trainable))
    g1, m1 = jax.device_get(single.gradients(batches, scales))
    g8, m8 = jax.device_get(sharded.gradients(batches, scales))
    for k in m1:
        np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5, atol=1e-5, err_msg=k)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g8)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    assert max(float(np.abs(x).max()) for x in jax.tree.leaves(g1)) > 1e-4  # gradients are not trivially zero
    # (parameters after an Adam step are not compared: Adam turns 1e-9 differences of near-zero
    # gradients into lr-sized steps)
    out1, out8 = single.step(batches, scales), sharded.step(batches, scales)
    for k in out1:
        np.testing.assert_allclose(out8[k], out1[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_bfloat16_parameters_train_through_a_float32_master(packed):
    """bf16 parameters: a float32 master takes the updates (moments and accumulator in float32) and
    the parameters are the master rounded; without it, updates below bf16's resolution vanish."""
    one_device = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])

    def run(master_dtype):
        model = Qwen25VL(presets.model_config(presets.get("tiny")), dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
        opt = optim.make_optimizer(learning_rate=1e-4, schedule="constant", warmup_steps=0, total_steps=3,
                                   weight_decay=0.0, clip_norm=1.0)
        learner = Learner(model, opt, LossConfig(kind="sft", vocab_chunk=300), one_device,
                          master_dtype=master_dtype)
        for _ in range(3):
            learner.step([packed.batch(0)], [1.0 / packed.trained_tokens(0)])
        return learner

    def norm_scales(tree):  # RMSNorm scales start at exactly 1.0; Adam moves them by ~lr a step
        return [x for path, x in jax.tree_util.tree_leaves_with_path(tree) if "norm" in jax.tree_util.keystr(path)]

    plain, mixed = run(None), run("float32")
    assert plain.master is None
    assert all(np.all(np.asarray(x) == 1.0) for x in norm_scales(plain.trainable))  # 3e-4 < bf16's half-ulp
    assert {x.dtype for x in jax.tree.leaves(mixed.trainable)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(mixed.master)} == {jnp.dtype(jnp.float32)}
    moments = [x for x in jax.tree.leaves(mixed.opt_state) if np.ndim(x) > 0]
    assert moments and {x.dtype for x in moments} == {jnp.dtype(jnp.float32)}
    moved = [np.abs(np.asarray(x) - 1.0).max() for x in norm_scales(mixed.master)]
    assert min(moved) > 1e-4  # the updates are kept
    for p, m in zip(jax.tree.leaves(mixed.trainable), jax.tree.leaves(mixed.master)):
        np.testing.assert_array_equal(np.asarray(p), np.asarray(m.astype(jnp.bfloat16)))
    assert set(mixed.state()) == {"trainable", "opt_state", "master"}
    fp32 = Learner(Qwen25VL(presets.model_config(presets.get("tiny")), rngs=nnx.Rngs(0)),
                   optim.make_optimizer(learning_rate=1e-4, warmup_steps=0, total_steps=1, weight_decay=0.0,
                                        clip_norm=None),
                   LossConfig(kind="sft", vocab_chunk=300), one_device)
    assert fp32.master is None and set(fp32.state()) == {"trainable", "opt_state"}  # no copy when not needed


def test_one_program_per_batch_shape(packed):
    learner = _learner("sft", (1, 1, 1))
    batches = [packed.batch(i) for i in range(len(packed))]
    for n in (1, len(batches), 2):  # any number of micro-batches: the same programs
        learner.step(batches[:n], [1.0 / n] * n)
    (programs,) = learner._programs.values()  # pylint: disable=protected-access
    assert all(fn._cache_size() == 1 for fn in programs.values())  # pylint: disable=protected-access


def grpo_update() -> tuple[dict[str, float], float]:
    """One GRPO update on a (2, 2, 2) mesh of all devices: (metrics, parameter checksum).

    Also the body of each process of the multi-process test (tests/train/distributed_worker.py)."""
    packed = _packed()
    batches = [packed.batch(i) for i in range(len(packed))]
    total = sum(packed.trained_tokens(i) for i in range(len(packed)))
    learner = _learner("grpo", (2, 2, 2), kl_coef=0.01)
    out = learner.step(batches, [packed.trained_tokens(i) / total for i in range(len(packed))])
    checksum = sum(float(jax.numpy.sum(x * x)) for x in jax.tree.leaves(learner.trainable))
    return out, checksum


def test_two_processes_agree(tmp_path):
    """Two CPU processes x 4 devices under jax.distributed run the same update as one process x 8."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-m", "tests.train.distributed_worker", str(port), str(i),
                               str(tmp_path / f"out{i}.json")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    assert [r["devices"] for r in results] == [8, 8] and [r["local"] for r in results] == [4, 4]
    assert results[0] == results[1]
    metrics, checksum = grpo_update()  # this process: 8 local devices
    np.testing.assert_allclose(results[0]["checksum"], checksum, rtol=1e-6)
    for k, v in metrics.items():
        np.testing.assert_allclose(results[0]["metrics"][k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_remat_gives_the_same_gradients(packed):
    batches = [packed.batch(0)]
    scales = [1.0 / packed.trained_tokens(0)]
    plain, _ = jax.device_get(_learner("sft", (1, 1, 1)).gradients(batches, scales))
    remat, _ = jax.device_get(_learner("sft", (1, 1, 1), remat=True).gradients(batches, scales))
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
