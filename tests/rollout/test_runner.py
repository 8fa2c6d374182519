"""The rollout runner: trajectories are consistent, and bad samples never stop a run."""

import numpy as np
import pytest
from flax import nnx

from gog_jax.agent import env as env_lib
from gog_jax.agent import render as render_lib
from gog_jax.agent import rewards
from gog_jax.models.qwen2_5_vl import Qwen25VL, presets
from gog_jax.rollout.runner import RolloutRunner
from gog_jax.sampling import Engine, SamplingParams
from gog_jax.world import oracle as oracle_lib
from gog_jax.world.corpus import default_tokenizer
from gog_jax.world.index import world_backend
from gog_jax.world.world import SMALL_WORLD, build_world

VISION = render_lib.VisionSpec(max_pixels=168 * 168)


class FailingBackend:
    """Every image search raises: the episode must go on with error observations."""

    def image_search(self, image, k):
        raise ConnectionError("search backend down")

    def text_search(self, query, k):
        raise TimeoutError("slow")


@pytest.fixture(scope="module")
def parts():
    world = build_world(SMALL_WORLD)
    model = Qwen25VL(presets.model_config(presets.get("tiny")), rngs=nnx.Rngs(0))
    questions = [oracle_lib.env_question(world, q) for q in world.questions["train"][:4]]
    return world, world_backend(world), model, default_tokenizer(), questions


def _runner(parts, backend=None, max_seq_len=768, **env):
    _, default_backend, model, tokenizer, _ = parts
    engine = Engine(model, num_slots=8, max_seq_len=max_seq_len, decode_steps=8)
    return RolloutRunner(engine, backend or default_backend, tokenizer,
                         env_lib.EnvConfig(prompt="brief", max_turns=3, **env), VISION)


PARAMS = SamplingParams(temperature=1.0, max_new_tokens=24)


def test_trajectories_are_consistent(parts):
    *_, tokenizer, questions = parts
    runner = _runner(parts)
    trajectories = runner.run(questions, PARAMS, group_size=2, seed=3)
    assert [t.qid for t in trajectories] == [q.id for q in questions for _ in range(2)]
    for t in trajectories:
        assert len(t.token_ids) == len(t.logprobs) == len(t.loss_mask)
        assert (t.logprobs[~t.loss_mask] == 0).all() and (t.logprobs[t.loss_mask] < 0).all()
        # the trained tokens are exactly the assistant turns the env saw, in order
        sampled = tokenizer.decode(t.token_ids[t.loss_mask])
        assert sampled == "".join(turn.text for turn in t.turns if turn.role == "assistant")
        texts = [turn.text for turn in t.turns if turn.role == "assistant"]
        assert len(t.trace) == len(texts) >= 1  # one env step, one trace record, per sampled turn
        # the runner ends an episode only on an answer, at the env's turn budget, or truncated
        assert t.prediction is not None or t.truncated or len(t.trace) == runner.env_config.max_turns, t.trace
        question = next(q for q in questions if q.id == t.qid)
        assert t.reward == rewards.episode_reward(t.prediction, question.answers, texts, question=question.question)
        assert len(t.images) == 1 + sum(r.get("box") is not None for r in t.trace)
        assert int(np.sum(t.token_ids == runner.engine.config.image_token_id)) == sum(
            render_lib.num_image_tokens(*im.shape[:2], VISION) for im in t.images)
    # a group's members share the prompt and sample differently
    assert any(not np.array_equal(a.token_ids, b.token_ids) for a, b in zip(trajectories[::2], trajectories[1::2]))
    runner.close()


def test_same_seed_same_rollouts(parts):
    *_, questions = parts
    first = _runner(parts).run(questions[:2], PARAMS, group_size=2, seed=5)
    again = _runner(parts).run(questions[:2], PARAMS, group_size=2, seed=5)
    assert all(np.array_equal(a.token_ids, b.token_ids) for a, b in zip(first, again))


def test_bad_samples_are_skipped_or_truncated(parts):
    *_, questions = parts
    corrupt = env_lib.Question("corrupt", np.zeros((0, 5, 3), np.uint8), "What is this?", ("x",), "glance")
    runner = _runner(parts, backend=FailingBackend(), max_seq_len=256)
    trajectories = runner.run([corrupt, *questions[:2]], PARAMS, group_size=1)
    assert [q for q, _ in runner.failures] == ["corrupt"]
    assert [t.qid for t in trajectories] == [q.id for q in questions[:2]]
    for t in trajectories:  # an untrained policy never answers: over-long (max_seq_len 256) or out of turns
        assert t.truncated is not None and t.prediction is None
        assert len(t.token_ids) <= 256
