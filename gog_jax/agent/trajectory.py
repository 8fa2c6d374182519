"""Trajectory JSONL records (DESIGN §2): a conversation as JSON, crops stored as source + box.

`{"id", "images": [path, ...], "messages": [{"role", "content": [{"type": "text", "text"} |
{"type": "image", "image": i, "box": [x1, y1, x2, y2] | null}]}], "meta": {...}}`

A gazed crop is stored as its source image and its box in original pixels, and re-cut by
`gaze.crop` on reading, so the SFT data always shows the model the crop the environment
would show (same margin, upscale and bucket) and the files stay small.
"""

from collections.abc import Callable
from typing import Any

import numpy as np

from gog_jax.agent import gaze as gaze_lib
from gog_jax.agent import protocol


def to_record(episode_id: str, turns: list[protocol.Turn], crop_boxes: list[list[int]], image_path: str,
              meta: dict[str, Any]) -> dict[str, Any]:
    """An episode over one question image -> a record.

    `turns` as `GoGEnv.turns` holds them: the first image is the question image, every later
    image a crop whose box (original pixels) is the next entry of `crop_boxes` (the `box` of
    the trace's gaze steps, in order).
    """
    boxes = iter(crop_boxes)
    seen_question_image = False
    messages = []
    for turn in turns:
        content = []
        for part in turn.parts:
            if isinstance(part, str):
                content.append({"type": "text", "text": part})
                continue
            box = next(boxes) if seen_question_image else None
            seen_question_image = True
            content.append({"type": "image", "image": 0, "box": None if box is None else [int(v) for v in box]})
        messages.append({"role": turn.role, "content": content})
    return {"id": episode_id, "images": [image_path], "messages": messages, "meta": dict(meta)}


def env_record(env, image_path: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of a `GoGEnv`'s current episode (question id, answers and kind in `meta`)."""
    question = env.question
    meta = {"kind": question.kind, "answer": list(question.answers), **(meta or {})}
    boxes = [step["box"] for step in env.trace if step.get("box") is not None]
    return to_record(question.id, env.turns, boxes, image_path, meta)


def from_record(record: dict[str, Any], load_image: Callable[[str], np.ndarray],
                config: gaze_lib.GazeConfig) -> list[protocol.Turn]:
    """A record -> turns ready for `render`; crops are re-cut from the loaded source images."""
    images = [load_image(path) for path in record["images"]]
    turns = []
    for message in record["messages"]:
        parts: list = []
        for item in message["content"]:
            if item["type"] == "text":
                parts.append(item["text"])
            elif item["type"] == "image":
                image = images[item["image"]]
                box = item.get("box")
                parts.append(image if box is None else gaze_lib.crop(image, tuple(box), config))
            else:
                raise ValueError(f"Unknown content type {item['type']!r} in record {record.get('id')!r}.")
        turns.append(protocol.Turn(message["role"], tuple(parts)))
    return turns
