"""Rendering: the only place conversation text becomes token ids (Qwen chat template).

A conversation renders to chunks, the units the sampling engine prefills or appends:

* `prompt`: `<|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n`
* `assistant`: one assistant turn's text, up to its action's closing tag (what the sampler emits)
* `observation`: `<|im_end|>\\n<|im_start|>user\\n<information>...</information><|im_end|>\\n`
  `<|im_start|>assistant\\n` -- it closes the previous assistant turn and opens the next one
* `end`: `<|im_end|>\\n` closing the last assistant turn

Concatenated, the chunks are exactly the Qwen2-VL chat template's rendering. Only `assistant`
chunks are trained on; the `<|im_end|>` closing an assistant turn sits in the next chunk,
because the sampler stops on the action's closing tag and never samples it -- so SFT and RL
see the same tokens. Chunk boundaries fall before a special token (`<|im_end|>`) or after the
generation prompt's "\\n", which the Qwen2 pre-tokenizer splits off from any following
non-space character, so tokenising chunk by chunk equals tokenising the whole string as long
as an assistant turn starts with a non-space character (as the grammar's `<think>` does).
Each image becomes `<|vision_start|>` + N x `<|image_pad|>` + `<|vision_end|>`, N from its
processed grid.

Qwen3-VL renders the same. Its released template (Qwen3-VL-*-Instruct's `chat_template.json`,
written here from memory: tokenizer files are not available offline) is ChatML with the same
markers and the same image placeholder per image; it differs from Qwen2.5-VL's only where we
do not go: no default "You are a helpful assistant." system turn when a conversation has none
(ours always has one, possibly empty), and tool calls as `<tool_call>` JSON with results in
`<tool_response>` user turns (our grammar has its own action tags). The Thinking models'
template also opens each generation with `<|im_start|>assistant\n<think>\n` and drops the
reasoning of assistant turns before the last user turn when it re-renders a history; we never
re-render (observations are appended) and our grammar already asks for `<think>...</think>`
at the start of each turn, so that variant is not implemented.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from gog_jax.agent import protocol
from gog_jax.agent.tokenizer import Tokenizer
from gog_jax.processing.image import CLIP_MEAN, CLIP_STD, smart_resize


@dataclasses.dataclass(frozen=True)
class VisionSpec:
    """The model's image processing: how many tokens an image takes, the frame boxes live in,
    and the pixel values it is given (`packing.image_inputs`).

    Defaults are Qwen2.5-VL's processor; `train.build.vision_spec` fills the sizes from the model's
    config and mean/std from its family (`models.families.processor`): Qwen3-VL's 16-pixel
    patches make the resize factor 32. The tiny world model uses e.g. max_pixels=168*168.
    """

    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


@dataclasses.dataclass(frozen=True)
class Chunk:
    """token_ids [T] int32; images in the order of their pad runs; role names the chunk kind."""

    token_ids: np.ndarray
    images: list
    role: str  # "prompt" | "assistant" | "observation" | "end"


def image_grid(height: int, width: int, vision: VisionSpec) -> tuple[int, int, int]:
    """(grid_t, grid_h, grid_w) in patches of an image of this size, as the processor gives."""
    h, w = smart_resize(height, width, vision.factor, vision.min_pixels, vision.max_pixels)
    return 1, h // vision.patch_size, w // vision.patch_size


def num_image_tokens(height: int, width: int, vision: VisionSpec) -> int:
    """Pad tokens for one image: grid_t * grid_h * grid_w / merge_size**2."""
    t, h, w = image_grid(height, width, vision)
    return t * h * w // vision.merge_size ** 2


class _Builder:
    """Accumulates token ids and images of one chunk."""

    def __init__(self, tokenizer: Tokenizer, vision: VisionSpec):
        self.tokenizer, self.vision = tokenizer, vision
        self.ids: list[np.ndarray] = []
        self.images: list = []

    def text(self, text: str) -> None:
        if text:
            self.ids.append(self.tokenizer.encode(text))

    def image(self, image: np.ndarray) -> None:
        tok = self.tokenizer
        n = num_image_tokens(image.shape[0], image.shape[1], self.vision)
        self.ids.append(np.concatenate([[tok.id_of(protocol.VISION_START)],
                                        np.full(n, tok.id_of(protocol.IMAGE_PAD)),
                                        [tok.id_of(protocol.VISION_END)]]).astype(np.int32))
        self.images.append(image)

    def message(self, turn: protocol.Turn) -> None:
        self.text(f"{protocol.IM_START}{turn.role}\n")
        for part in turn.parts:
            if isinstance(part, str):
                self.text(part)
            else:
                self.image(part)
        self.text(f"{protocol.IM_END}\n")

    def chunk(self, role: str) -> Chunk:
        ids = np.concatenate(self.ids).astype(np.int32) if self.ids else np.zeros(0, np.int32)
        return Chunk(ids, self.images, role)


def render_prompt(turns: Sequence[protocol.Turn], tokenizer: Tokenizer, vision: VisionSpec) -> Chunk:
    """System + user turns, then the generation prompt `<|im_start|>assistant\\n`."""
    b = _Builder(tokenizer, vision)
    for turn in turns:
        b.message(turn)
    b.text(f"{protocol.IM_START}assistant\n")
    return b.chunk("prompt")


def render_observation(turns: protocol.Turn | Sequence[protocol.Turn], tokenizer: Tokenizer,
                       vision: VisionSpec) -> Chunk:
    """Closes the assistant turn, adds the observation user turn(s), opens the next assistant turn."""
    b = _Builder(tokenizer, vision)
    b.text(f"{protocol.IM_END}\n")
    for turn in [turns] if isinstance(turns, protocol.Turn) else turns:
        b.message(turn)
    b.text(f"{protocol.IM_START}assistant\n")
    return b.chunk("observation")


def render_assistant(text: str, tokenizer: Tokenizer) -> Chunk:
    """An assistant turn's text (SFT data; in RL the sampled ids are used instead)."""
    return Chunk(tokenizer.encode(text), [], "assistant")


def render_end(tokenizer: Tokenizer) -> Chunk:
    return Chunk(tokenizer.encode(f"{protocol.IM_END}\n"), [], "end")


def render(turns: Sequence[protocol.Turn], tokenizer: Tokenizer, vision: VisionSpec) -> list[Chunk]:
    """A whole conversation -> chunks (see the module docstring).

    Ends with an `end` chunk if the last turn is the assistant's, else with the generation
    prompt (so a conversation awaiting the next assistant turn is ready to decode).
    """
    turns = list(turns)
    first = next((i for i, t in enumerate(turns) if t.role == "assistant"), len(turns))
    if first == 0:
        raise ValueError("A conversation starts with system/user turns, not the assistant's.")
    chunks = [render_prompt(turns[:first], tokenizer, vision)]
    i = first
    while i < len(turns):
        if turns[i].role == "assistant":
            if turns[i].images:
                raise ValueError("Assistant turns carry text only.")
            chunks.append(render_assistant(turns[i].text, tokenizer))
            i += 1
            continue
        j = i
        while j < len(turns) and turns[j].role != "assistant":
            j += 1
        chunks.append(render_observation(turns[i:j], tokenizer, vision))
        i = j
    if turns[-1].role == "assistant":
        chunks.append(render_end(tokenizer))
    return chunks


def loss_mask(chunks: Sequence[Chunk]) -> np.ndarray:
    """[T] bool over the concatenated chunks: True on assistant tokens only (the SFT loss)."""
    return np.concatenate([np.full(len(c.token_ids), c.role == "assistant") for c in chunks])
