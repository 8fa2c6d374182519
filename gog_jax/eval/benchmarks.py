"""Loaders for the public knowledge-VQA benchmarks that search-augmented VLM work reports on.

Each loader reads one benchmark's published file as it is (shared/BENCHMARKS.md) and yields,
per record, either a `BenchmarkQuestion` or a `Skipped` with its reason. Real dumps hold a few
broken rows (an image that does not decode, a test row without answers); one of them must not
end an evaluation of thousands, so `load_benchmark` counts skips per reason and logs them once.

    questions, skipped = load_benchmark("fvqa", "fvqa_test.parquet")

| name      | file                                  | image                       | default judge |
|-----------|---------------------------------------|-----------------------------|---------------|
| fvqa      | `fvqa_{train,test}.parquet` (veRL)    | `images[0].bytes`           | exact_match   |
| infoseek  | `infoseek_*.jsonl` or sub-2k parquet  | `image_id` under image_dir  | exact_match   |
| simplevqa | `test.parquet`                        | `image` base64              | llm_judge     |
| mmsearch  | `end2end.parquet`                     | `query_image` (HF Image)    | f1            |
| livevqa   | `qa.json` or `benchmark.json`         | path under image_dir        | llm_judge     |
| dynvqa    | `DynVQA_{en,zh}.*.jsonl`              | `image_url` under image_dir | f1            |

No loader touches the network: images given by URL (Dyn-VQA) or by id (InfoSeek's OVEN
images) must be downloaded beforehand into `image_dir`.
"""

import base64
import binascii
import collections
import dataclasses
import io
import json
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from absl import logging
from PIL import Image

from gog_jax.agent.env import Question

# Skip reasons, the keys of the `skipped` dict.
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
MISSING_ANSWER = "missing_answer"
MISSING_QUESTION = "missing_question"
TEXT_ONLY = "text_only"  # MMSearch queries published without an image (by design, not damage)
MALFORMED_RECORD = "malformed_record"  # a JSONL line that is not a JSON object

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".JPEG", ".JPG", ".PNG")


@dataclasses.dataclass(frozen=True)
class BenchmarkQuestion:
    """A loaded question, the benchmark it came from and its split/category fields (for breakdowns)."""

    benchmark: str
    question: Question
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Skipped:
    reason: str
    record_id: str


Item = BenchmarkQuestion | Skipped
Loader = Callable[..., Iterator[Item]]


# ---------------------------------------------------------------------------- readers


def _parquet_rows(path: str) -> Iterator[dict[str, Any]]:
    """Rows as dicts, a batch at a time: the InfoSeek sub-2k file is 277 MB of image bytes."""
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel  # only the parquet benchmarks need it

    for batch in pq.ParquetFile(path).iter_batches(batch_size=64):
        yield from batch.to_pylist()


def _jsonl_rows(path: str) -> Iterator[dict[str, Any] | None]:
    """Parsed lines; None for a line that is not a JSON object (counted as malformed, not fatal)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            yield row if isinstance(row, dict) else None


def _json_rows(path: str) -> list[dict[str, Any]]:
    """A JSON list of records, or an object mapping id -> record (the id then fills a missing one)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict):
        return [{"sample_id": key, **value} for key, value in data.items() if isinstance(value, dict)]
    return [row for row in data if isinstance(row, dict)]


# ---------------------------------------------------------------------------- fields


def decode_image(data: bytes) -> np.ndarray | None:
    """Encoded image (or its base64 text) -> uint8 [H, W, 3]; None if it does not decode.

    `load()` forces the full decode so that a truncated file fails here, not mid-episode.
    """
    image = _decode(data)
    if image is None and (raw := _unbase64(data)) is not None:
        image = _decode(raw)
    return image


def _decode(data: bytes) -> np.ndarray | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _unbase64(data: bytes) -> bytes | None:
    """Base64 text (line-wrapped or a `data:image/...;base64,` URI too) -> bytes; None if it is not."""
    if data.startswith(b"data:"):
        data = data.split(b",", 1)[-1]
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        return None


def _read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _embedded_image(value: Any, base_dir: str) -> tuple[np.ndarray | None, str | None]:
    """An image stored in the record: raw bytes, base64 text, or a HF Image struct {bytes, path}.

    Returns (image, None) or (None, skip reason).
    """
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is None and value.get("path"):
            data = _read_file(os.path.join(base_dir, value["path"]))
        value = data
    if value is None or (isinstance(value, (bytes, str)) and not value):
        return None, MISSING_IMAGE
    data = value.encode("ascii", "ignore") if isinstance(value, str) else bytes(value)
    image = decode_image(data)
    return (image, None) if image is not None else (None, CORRUPT_IMAGE)


def _file_image(candidates: Iterable[str]) -> tuple[np.ndarray | None, str | None]:
    """The first existing file of `candidates`, decoded; (None, reason) if none exists or it is broken."""
    for path in candidates:
        if os.path.isfile(path):
            image = decode_image(_read_file(path) or b"")
            return (image, None) if image is not None else (None, CORRUPT_IMAGE)
    return None, MISSING_IMAGE


def _answers(*values: Any) -> tuple[str, ...]:
    """Gold answers from strings, numbers and lists of them: stripped, de-duplicated, in order."""
    out: list[str] = []
    for value in values:
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, (str, int, float)) and not isinstance(item, bool):
                # Wikidata quantities come as floats: 324.0 is answered "324"
                text = str(int(item)) if isinstance(item, float) and item.is_integer() else str(item).strip()
                if text and text not in out:
                    out.append(text)
    return tuple(out)


def _json_list(value: Any) -> list[Any]:
    """veRL stores `candidate_answers` as a JSON *string* of a list; a real list passes through."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return []
    return list(value) if isinstance(value, (list, tuple)) else []


def _question(name: str, record_id: str, text: Any, image: np.ndarray | None, image_error: str | None,
              answers: tuple[str, ...], meta: dict[str, Any]) -> Item:
    """The item for one record, or the first reason it cannot be one (image, then question, then answer)."""
    if image_error is not None:
        return Skipped(image_error, record_id)
    if not isinstance(text, str) or not text.strip():
        return Skipped(MISSING_QUESTION, record_id)
    if not answers:
        return Skipped(MISSING_ANSWER, record_id)
    meta = {k: v for k, v in meta.items() if v is not None}
    return BenchmarkQuestion(name, Question(record_id, image, text.strip(), answers), meta)


# ---------------------------------------------------------------------------- loaders


def _verl_parquet(name: str, path: str) -> Iterator[Item]:
    """MMSearch-R1's veRL parquet (FVQA, InfoSeek sub-2k): prompt[0].content, images[0].bytes, reward_model."""
    base_dir = os.path.dirname(path)
    for i, row in enumerate(_parquet_rows(path)):
        record_id = str(row.get("data_id") or f"{name}_{i}")
        prompt = row.get("prompt") or []
        user = [m for m in prompt if isinstance(m, dict) and m.get("role", "user") == "user"]
        # veRL multimodal prompts may carry an `<image>` placeholder; our renderer places the image itself.
        text = user[0].get("content", "").replace("<image>", "").strip() if user else None
        images = row.get("images") or []
        image, error = _embedded_image(images[0], base_dir) if images else (None, MISSING_IMAGE)
        reward = row.get("reward_model") or {}
        answers = _answers(reward.get("ground_truth"), _json_list(reward.get("candidate_answers")))
        yield _question(name, record_id, text, image, error, answers,
                        {"data_source": row.get("data_source"), "category": row.get("category")})


def load_fvqa(path: str) -> Iterator[Item]:
    """FVQA (`lmms-lab/FVQA`): `fvqa_train.parquet` / `fvqa_test.parquet`."""
    return _verl_parquet("fvqa", path)


def load_infoseek(path: str, image_dir: str | None = None, qtype_path: str | None = None) -> Iterator[Item]:
    """InfoSeek: the official JSONL (`image_id` + OVEN images in `image_dir`), or MMSearch-R1's sub-2k parquet.

    JSONL answers are `answer_eval` (the strings the official EM scores against) then `answer`;
    a numeric `answer_eval` entry `{"wikidata": v, "range": [lo, hi]}` adds `v` as text and
    keeps the range in `meta["range"]` for a range-aware judge. `qtype_path`
    (`infoseek_val_qtype.jsonl`) adds `question_type` to meta. The test and human files carry no
    answers: their rows are skipped as missing_answer.
    """
    if path.endswith(".parquet"):
        yield from _verl_parquet("infoseek", path)
        return
    if image_dir is None:
        raise ValueError("InfoSeek JSONL names images by OVEN id: pass image_dir, the folder of the OVEN images.")
    qtypes = {row["data_id"]: row.get("question_type") for row in _jsonl_rows(qtype_path)
              if row and "data_id" in row} if qtype_path else {}
    index = _ImageIndex(image_dir)
    for i, row in enumerate(_jsonl_rows(path)):
        if row is None:
            yield Skipped(MALFORMED_RECORD, f"line {i + 1}")
            continue
        record_id = str(row.get("data_id") or f"infoseek_{i}")
        image_id = row.get("image_id")
        image, error = _file_image(index.find(str(image_id))) if image_id else (None, MISSING_IMAGE)
        evals = row.get("answer_eval")
        evals = evals if isinstance(evals, list) else [evals]
        numeric = [e for e in evals if isinstance(e, dict)]
        answers = _answers([e for e in evals if not isinstance(e, dict)], [e.get("wikidata") for e in numeric],
                           row.get("answer"))
        yield _question("infoseek", record_id, row.get("question"), image, error, answers,
                        {"data_split": row.get("data_split"), "question_type": qtypes.get(row.get("data_id")),
                         "range": numeric[0].get("range") if numeric else None})


class _ImageIndex:
    """Image files under a folder by stem (`oven_01963180` -> path), at any depth: OVEN's
    published image folders are sharded, and matching by stem does not depend on how."""

    def __init__(self, root: str):
        self.root = root
        self._paths: dict[str, str] | None = None

    def find(self, stem: str) -> list[str]:
        direct = [os.path.join(self.root, stem + ext) for ext in _IMAGE_EXTENSIONS]
        if any(os.path.isfile(p) for p in direct):
            return direct
        if self._paths is None:  # walked once, on the first image not found at the top level
            self._paths = {}
            for folder, _, files in os.walk(self.root):
                for file in files:
                    stem_, ext = os.path.splitext(file)
                    if ext in _IMAGE_EXTENSIONS:
                        self._paths.setdefault(stem_, os.path.join(folder, file))
        return [self._paths[stem]] if stem in self._paths else []


def load_simplevqa(path: str) -> Iterator[Item]:
    """SimpleVQA (`m-a-p/SimpleVQA` `test.parquet`): base64 `image`, one `answer`, CN and EN rows."""
    base_dir = os.path.dirname(path)
    for i, row in enumerate(_parquet_rows(path)):
        record_id = str(row["data_id"]) if row.get("data_id") is not None else f"simplevqa_{i}"
        image, error = _embedded_image(row.get("image"), base_dir)
        yield _question("simplevqa", record_id, row.get("question"), image, error, _answers(row.get("answer")),
                        {"language": row.get("language"), "vqa_category": row.get("vqa_category"),
                         "original_category": row.get("original_category")})


def load_mmsearch(path: str) -> Iterator[Item]:
    """MMSearch end2end (`CaraJ/MMSearch` `end2end.parquet`): `query_image` + `gt_answer` and alternatives.

    About 129 of the 300 queries have no image; they are skipped as `text_only` (an image-search
    agent has nothing to glance at). `image_search_result` is never used: it is a screenshot of
    the search results, and would leak the answer.
    """
    base_dir = os.path.dirname(path)
    for i, row in enumerate(_parquet_rows(path)):
        record_id = str(row.get("sample_id") or f"mmsearch_{i}")
        if row.get("query_image") is None:
            yield Skipped(TEXT_ONLY, record_id)
            continue
        image, error = _embedded_image(row["query_image"], base_dir)
        yield _question("mmsearch", record_id, row.get("query"), image, error,
                        _answers(row.get("gt_answer"), row.get("alternative_gt_answers")),
                        {"area": row.get("area"), "subfield": row.get("subfield"), "timestamp": row.get("timestamp")})


def _image_roots(path: str, image_dir: str | None) -> list[str]:
    base = os.path.dirname(os.path.abspath(path))
    return [image_dir] if image_dir else [base, os.path.join(base, "image"), os.path.join(base, "images")]


def _local_candidates(image_path: str, roots: Sequence[str]) -> list[str]:
    """Where a published image path may be now: as given, under a root, or by file name under a root
    (LiveVQA's `query_image` is an absolute path on the authors' machine)."""
    candidates = [image_path] if os.path.isabs(image_path) else []
    for root in roots:
        candidates += [os.path.join(root, image_path.lstrip("/")), os.path.join(root, os.path.basename(image_path))]
    return candidates


def load_livevqa(path: str, image_dir: str | None = None) -> Iterator[Item]:
    """LiveVQA, either release.

    (a) research preview `qa.json` / `qa_detailed.json`: `sample_id`, `query`, `query_image`, `gt_answer`.
    (b) full release `{News,Paper,Video}/benchmark.json`: one record holds `level1_qa` and
        `level2_qa`, loaded as two questions `<id>_level1` / `<id>_level2`; answers are the texts of
        `Ground_Truth_List` (open-ended, as search agents are scored; the options are not shown).
    Images are looked up in `image_dir`, else beside the JSON file and in its `image/` or `images/`.
    """
    roots = _image_roots(path, image_dir)
    for i, row in enumerate(_json_rows(path)):
        if "level1_qa" in row or "level2_qa" in row:
            image_path = row.get("img_path")
            image, error = _file_image(_local_candidates(image_path, roots)) if image_path else (None, MISSING_IMAGE)
            for level in ("level1", "level2"):
                qa = row.get(f"{level}_qa")
                if not isinstance(qa, dict):
                    continue
                yield _question("livevqa", f"{row.get('id', i)}_{level}", qa.get("question"), image, error,
                                _answers(qa.get("Ground_Truth_List")),
                                {"level": level, "question_type": qa.get("question_type"),
                                 "source": row.get("source"), "time": row.get("time")})
        else:
            image_path = row.get("query_image")
            image, error = _file_image(_local_candidates(image_path, roots)) if image_path else (None, MISSING_IMAGE)
            yield _question("livevqa", str(row.get("sample_id", f"livevqa_{i}")), row.get("query"), image, error,
                            _answers(row.get("gt_answer")), {"topic": row.get("topic")})


def load_dynvqa(path: str, image_dir: str | None = None) -> Iterator[Item]:
    """Dyn-VQA (`OmniSearch/dataset/DynVQA_{en,zh}/*.jsonl`): images are OSS URLs, fetched beforehand.

    A URL's image is looked up in `image_dir` (default: the JSONL's folder) by its URL path, then
    by its file name (`…/image_98.jpeg` -> `image_dir/image_98.jpeg`); a local path is looked up
    as given, then the same way.
    """
    roots = [image_dir or os.path.dirname(os.path.abspath(path))]
    for i, row in enumerate(_jsonl_rows(path)):
        if row is None:
            yield Skipped(MALFORMED_RECORD, f"line {i + 1}")
            continue
        record_id = str(row.get("question_id") or f"dynvqa_{i}")
        url = row.get("image_url")
        if url:
            local = urllib.parse.urlparse(url).path.lstrip("/") if re.match(r"https?://", url) else url
            image, error = _file_image(_local_candidates(local, roots))
        else:
            image, error = None, MISSING_IMAGE
        language = re.match(r"[a-z]*", record_id).group(0) or None
        yield _question("dynvqa", record_id, row.get("question"), image, error, _answers(row.get("answer")),
                        {"language": language, "golden_query": row.get("golden_query")})


LOADERS: dict[str, Loader] = {
    "fvqa": load_fvqa,
    "infoseek": load_infoseek,
    "simplevqa": load_simplevqa,
    "mmsearch": load_mmsearch,
    "livevqa": load_livevqa,
    "dynvqa": load_dynvqa,
}

# The judge (gog_jax.agent.rewards.ACCURACY_FACTORIES) closest to each benchmark's own metric.
DEFAULT_JUDGES: dict[str, str] = {
    "fvqa": "exact_match",  # SQuAD-normalised EM over ground truth + candidates
    "infoseek": "exact_match",  # EM over answer_eval (numeric ranges need a range judge)
    "simplevqa": "llm_judge",  # GPT-4o correct / incorrect / not attempted
    "mmsearch": "f1",  # token F1, best over gt + alternatives
    "livevqa": "llm_judge",  # GPT-4o-mini judge
    "dynvqa": "f1",  # its own metric is token recall (nltk / jieba); F1 is the nearest registered
}


def load_benchmark(name: str, path: str, limit: int = -1,
                   **kwargs) -> tuple[list[BenchmarkQuestion], dict[str, int]]:
    """(questions, skipped reason -> count) of a benchmark file; `limit` >= 0 stops after that many questions.

    `kwargs` go to the loader (`image_dir=` for InfoSeek JSONL, LiveVQA and Dyn-VQA).
    """
    if name not in LOADERS:
        raise ValueError(f"Unknown benchmark {name!r}; known: {sorted(LOADERS)}.")
    questions: list[BenchmarkQuestion] = []
    skipped: collections.Counter[str] = collections.Counter()
    first_skipped: dict[str, str] = {}
    for item in LOADERS[name](path, **kwargs):
        if limit >= 0 and len(questions) >= limit:
            break
        if isinstance(item, Skipped):
            skipped[item.reason] += 1
            first_skipped.setdefault(item.reason, item.record_id)
        else:
            questions.append(item)
    if skipped:
        logging.warning("%s: loaded %d questions from %s, skipped %s", name, len(questions), path,
                        ", ".join(f"{r}={n} (first: {first_skipped[r]})" for r, n in sorted(skipped.items())))
    else:
        logging.info("%s: loaded %d questions from %s", name, len(questions), path)
    return questions, dict(skipped)
