"""Tokenizers: the embedded default (a byte-level BPE trained on the world's text) and real ones.

The embedded default fixes the Qwen chat markers and every action tag as single special
tokens at the ids in `SPECIAL_TOKENS`, so the `tiny` model preset and the sampler's stop ids
are known before any tokenizer is trained. Real checkpoints bring their own `tokenizer.json`;
then the special ids come from that file (Qwen's 151643...). Both are saved and loaded the
way Hugging Face does (`tokenizer.json` + `tokenizer_config.json` holding the chat template),
so `transformers.AutoTokenizer` can read ours too.
"""

import dataclasses
import json
import os
from collections.abc import Iterable

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS: dict[str, int] = {
    "<|endoftext|>": 0,
    "<|im_start|>": 1,
    "<|im_end|>": 2,
    "<|vision_start|>": 3,
    "<|vision_end|>": 4,
    "<|image_pad|>": 5,
    "<|video_pad|>": 6,
    "<think>": 7,
    "</think>": 8,
    "<glance/>": 9,
    "<gaze>": 10,
    "</gaze>": 11,
    "<search>": 12,
    "</search>": 13,
    "<answer>": 14,
    "</answer>": 15,
    "<information>": 16,
    "</information>": 17,
}

DEFAULT_VOCAB_SIZE = 2048

# Qwen2's pre-tokenizer split (digits one by one); the same split for ours keeps chunk
# boundaries (after "\n" and around special tokens) tokenisation-neutral for both.
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen2-VL's chat template (jinja), stored with our tokenizer so HF tooling renders as we do.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """A `tokenizers.Tokenizer` plus the ids of the chat markers it knows.

    `special_ids` maps each marker/tag that is a single token in this vocabulary to its id;
    action tags are absent for vocabularies (like Qwen2.5's) where they are plain text.
    """

    backend: tokenizers.Tokenizer
    special_ids: dict[str, int]
    chat_template: str = CHAT_TEMPLATE

    def encode(self, text: str) -> np.ndarray:
        """Text -> int32 ids; special tokens written in the text become their single ids."""
        return np.asarray(self.backend.encode(text, add_special_tokens=False).ids, np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def id_of(self, token: str) -> int:
        """The id of a single-token marker; raises KeyError naming the token if it is not one."""
        if token not in self.special_ids:
            raise KeyError(f"{token!r} is not a single token of this tokenizer.")
        return self.special_ids[token]

    def save(self, directory: str) -> None:
        """Writes `tokenizer.json` and `tokenizer_config.json` (chat template, eos) as HF does."""
        os.makedirs(directory, exist_ok=True)
        self.backend.save(os.path.join(directory, "tokenizer.json"))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": self.chat_template,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "bos_token": None,
            "unk_token": None,
            "model_max_length": 32768,
        }
        with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)


def special_ids_of(backend: tokenizers.Tokenizer) -> dict[str, int]:
    """Every name in SPECIAL_TOKENS that this vocabulary holds as one added token (any id)."""
    added = {t.content: i for i, t in backend.get_added_tokens_decoder().items()}
    return {name: added[name] for name in SPECIAL_TOKENS if name in added}


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """Deterministic byte-level BPE over `texts`, specials at the ids of SPECIAL_TOKENS.

    Byte-level with the full 256-byte alphabet, so any text (a model's wild output, unicode in
    a snippet) encodes without unknown tokens.
    """
    names = sorted(SPECIAL_TOKENS, key=SPECIAL_TOKENS.get)
    if [SPECIAL_TOKENS[n] for n in names] != list(range(len(names))):
        raise ValueError("SPECIAL_TOKENS must hold the ids 0..n-1.")
    backend = tokenizers.Tokenizer(models.BPE(fuse_unk=False))
    backend.normalizer = tokenizers.normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=names, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    backend.train_from_iterator(list(texts), trainer=trainer)
    special = special_ids_of(backend)
    if special != SPECIAL_TOKENS:
        raise RuntimeError(f"Special tokens landed at the wrong ids: {special}")
    return Tokenizer(backend, special)


def load_tokenizer(directory: str) -> Tokenizer:
    """Reads `tokenizer.json` and the folder's own chat template (`chat_template_of`)."""
    backend = tokenizers.Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    return Tokenizer(backend, special_ids_of(backend), chat_template_of(directory))


def chat_template_of(directory: str) -> str:
    """The template a checkpoint folder ships, where Hugging Face keeps it: `chat_template.jinja`
    (transformers 5's `save_pretrained`), `chat_template.json` (released Qwen2.5-VL / Qwen3-VL
    processors) or `tokenizer_config.json`, first found wins; Qwen2-VL's when none has one. So an
    export of a released Qwen3-VL keeps Qwen3-VL's template, not ours."""
    jinja = os.path.join(directory, "chat_template.jinja")
    if os.path.exists(jinja):
        with open(jinja, encoding="utf-8") as f:
            return f.read()
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                template = json.load(f).get("chat_template")
            if isinstance(template, str) and template:
                return template
    return CHAT_TEMPLATE


def stop_token_sequences(tokenizer: Tokenizer, strings: Iterable[str]) -> list[list[int]]:
    """Each stop string as the token-id list the sampler matches on device.

    With our tokenizer every action tag is one id. In vocabularies where a tag is plain text
    (Qwen2.5) the ids in context may differ from the tag encoded alone (BPE can merge a tag's
    first characters with the text before it), so there the sampler should also check text.
    """
    return [tokenizer.encode(s).tolist() for s in strings]
