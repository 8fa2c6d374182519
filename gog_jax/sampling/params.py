"""Sampling parameters and their per-slot device form."""

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to sample one request. temperature 0 is greedy; top_k 0 and top_p 1 disable filtering.

    Stops (DESIGN §2): the checkpoint's EOS ids (unless `ignore_eos`), `stop_token_ids`, and
    `stop_sequences` — token-id lists matched on device against the newest generated tokens
    (an action's closing tag may be several tokens). Stop tokens are kept in the output.
    Before `min_new_tokens`, stop ids are masked out of the distribution (as transformers'
    MinNewTokensLogitsProcessor does) and stop sequences are not matched.
    """
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    stop_token_ids: tuple[int, ...] = ()
    stop_sequences: tuple[tuple[int, ...], ...] = ()
    ignore_eos: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(f"Invalid sampling params: temperature={self.temperature}, top_p={self.top_p}, "
                             f"top_k={self.top_k}.")
        if self.max_new_tokens < 1 or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"Need 1 <= max_new_tokens and 0 <= min_new_tokens <= max_new_tokens; got "
                             f"{self.max_new_tokens}, {self.min_new_tokens}.")
        if any(len(s) == 0 for s in self.stop_sequences):
            raise ValueError("Empty stop sequence.")


def pack_stop_ids(ids: Sequence[int], width: int) -> np.ndarray:
    """Stop ids padded with -1 to `width` (a static size shared by all slots)."""
    if len(ids) > width:
        raise ValueError(f"{len(ids)} stop token ids exceed the engine's limit of {width}.")
    return np.array(list(ids) + [-1] * (width - len(ids)), np.int32)


def pack_stop_sequences(sequences: Sequence[Sequence[int]], count: int, length: int) -> np.ndarray:
    """[count, length] right-aligned sequences; -1 is a wildcard, a row of -2 never matches."""
    if len(sequences) > count or any(len(s) > length for s in sequences):
        raise ValueError(f"Stop sequences exceed the engine's limit of {count} sequences of {length} tokens.")
    packed = np.full((count, length), -2, np.int32)
    for row, seq in enumerate(sequences):
        packed[row] = -1
        packed[row, length - len(seq):] = seq
    return packed
