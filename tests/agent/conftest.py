"""Shared fixtures. A Qwen2-style tokenizer from the real Qwen BPE ranks shipped in the `qwen-agent` wheel.

The wheel is installed with `--no-deps` (its dependencies are an agent framework we do not
need); the ranks file is located through the distribution's metadata, without importing
`qwen_agent` (whose `__init__` needs those dependencies).
"""

import base64
import importlib.metadata

import pytest
from tokenizers import AddedToken, normalizers
from transformers.convert_slow_tokenizer import TikTokenConverter

from gog_jax.agent.tokenizer import QWEN2_PATTERN, Tokenizer, special_ids_of

# Qwen2.5-VL's added tokens, in id order from 151643.
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                 "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                 "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                 "<|image_pad|>", "<|video_pad|>"]


def _ranks_path():
    try:
        dist = importlib.metadata.distribution("qwen-agent")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("qwen-agent is missing: the README test command installs it with "
                    "`pip install --no-deps qwen-agent==0.0.34` (its Qwen vocabulary is the reference).")
    return dist.locate_file("qwen_agent/utils/qwen.tiktoken")


def _load_ranks(path) -> dict[bytes, int]:
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


class _Converter(TikTokenConverter):
    load_tiktoken_bpe = staticmethod(_load_ranks)


@pytest.fixture(scope="session")
def qwen_tokenizer() -> Tokenizer:
    backend = _Converter(vocab_file=str(_ranks_path()), pattern=QWEN2_PATTERN).converted()
    backend.normalizer = normalizers.NFC()
    backend.post_processor = None
    added = backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in QWEN_SPECIALS])
    assert added == len(QWEN_SPECIALS)
    return Tokenizer(backend, special_ids_of(backend))


def _world_like_corpus(n: int = 1500, seed: int = 0) -> list[str]:
    """Sentences of made-up names and facts, like the synthetic world's knowledge base."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(seed)
    syllables = ["ka", "vor", "lin", "mel", "dra", "su", "tor", "qui", "ben", "zar", "ot", "el"]
    words = ["".join(rng.choice(syllables, size=rng.integers(2, 4))) for _ in range(1500)]
    out = []
    for i in range(n):
        a, b, c = rng.choice(words, size=3)
        out.append(f"{a.title()} {b.title()} was founded in {1800 + i % 200} in {c.title()}; its emblem is a badge.")
    return out


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    from gog_jax.agent import protocol  # pylint: disable=import-outside-toplevel
    return protocol.corpus_texts() + _world_like_corpus()


@pytest.fixture(scope="session")
def tiny_tokenizer(corpus) -> Tokenizer:
    from gog_jax.agent.tokenizer import train_tokenizer  # pylint: disable=import-outside-toplevel
    return train_tokenizer(corpus)
