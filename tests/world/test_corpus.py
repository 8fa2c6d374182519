import filecmp

import numpy as np

from gog_jax.agent import env as env_lib
from gog_jax.agent import protocol, render
from gog_jax.eval.episodes import run_episode
from gog_jax.models.qwen2_5_vl import presets
from gog_jax.world import oracle as oracle_lib
from gog_jax.agent.tokenizer import SPECIAL_TOKENS
from gog_jax.world import corpus
from gog_jax.world.kb import entity_page
from gog_jax.world.rename import name_words


def test_shipped_tokenizer_regenerates_byte_identically(tmp_path):
    corpus.build_default_tokenizer().save(str(tmp_path))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        # The corpus holds the protocol's prompts and scripted episodes' searches: after a change
        # there, regenerate with `python -m gog_jax.world.corpus` and commit the asset.
        assert filecmp.cmp(tmp_path / name, f"{corpus.ASSET_DIR}/{name}", shallow=False), (
            f"{name} is stale: run `python -m gog_jax.world.corpus`")


def test_shipped_tokenizer_covers_the_world(default_world):
    tok = corpus.default_tokenizer()
    assert tok.vocab_size <= presets.get("tiny").text.vocab_size  # the embedded default's embedding covers it
    assert tok.special_ids == SPECIAL_TOKENS
    # World text compresses well: a KB page is a few dozen tokens, a question about ten.
    pages = [len(tok.encode(entity_page(e))) / len(entity_page(e)) for e in default_world.entities]
    assert np.mean(pages) < 0.35
    qs = [len(tok.encode(q.question)) for q in default_world.questions["test"]]
    assert np.mean(qs) < 16
    text = protocol.format_action(protocol.Gaze((0, 56, 56, 112)), "Many emblems; I crop the top-left emblem.")
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert SPECIAL_TOKENS["<gaze>"] in ids and SPECIAL_TOKENS["</think>"] in ids
    # Every proper name is one token, whichever split its entity belongs to (corpus.name_texts).
    assert all(len(tok.encode(" " + w)) == 1 == len(tok.encode(w)) for w in name_words(default_world))


def test_world_episodes_render_with_the_shipped_tokenizer(small_world, small_backend):
    tok = corpus.default_tokenizer()
    vision = render.VisionSpec(max_pixels=168 * 168)
    env = env_lib.GoGEnv(small_backend, env_lib.EnvConfig(prompt="brief", top_k=1))
    for q in small_world.questions["test"]:
        result = run_episode(env, oracle_lib.Oracle(wrong_crop_share=0.5), oracle_lib.env_question(small_world, q),
                             oracle_lib.question_meta(small_world, q))
        chunks = render.render(result.turns, tok, vision)
        assistant = [tok.decode(c.token_ids) for c in chunks if c.role == "assistant"]
        assert [a.removesuffix("<|im_end|>") for a in assistant] == result.assistant_texts
        # Scene 36 visual tokens + crops 4 each; whole episodes stay a few hundred tokens.
        assert sum(len(c.token_ids) for c in chunks) < 480
