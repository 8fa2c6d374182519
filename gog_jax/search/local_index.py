"""`LocalIndex`: the offline search backend -- image near-duplicate search and BM25 text search.

Images: the embedder's unit vectors in a faiss `IndexFlatIP` (exact inner product = cosine;
exact search is fast at the scale of a synthetic world or a benchmark's image pool, and an
exact index has no training randomness to make results depend on build order). Each image is
indexed as five views: itself and itself with `cut_views` (20%) of its side cut off at each
edge; a record scores its best view. A gaze box that cuts into a glyph then still meets a view
that shows the same part: on the synthetic world, crops whose box edges are each jittered by
up to 15% of a tight emblem box find their emblem 0.96 of the time with the views, 0.89
without; jittered cell boxes 0.99 either way; whole cluttered scenes still match no emblem.
Text: BM25 (bm25s) over title + text. Both rank by (score descending, record order ascending), so ties
break the same way on every host and after every save/load.

On disk (`save(dir)`, `LocalIndex.load(dir)`, or a hand-made folder for `from_folder`):
  records.jsonl   {"source_id", "title", "text", "image": "relative/path.png" or null} per line
  images/...      the images (PNG)
  vectors.npy     float32 [n_images * views, D] (written by `save`; rebuilt when absent or
                  when the embedder or the views differ from those in meta.json)
  meta.json       {"embedder": name, "snippet_chars": n, "cut_views": f}
The BM25 index is rebuilt from the text on load (milliseconds at this scale, and exactly the same).
"""

from collections.abc import Iterable, Sequence
import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import unicodedata

import bm25s
import faiss
import numpy as np
from PIL import Image

from gog_jax.search.base import (SearchBackend, SearchError, SearchResult, check_image, check_k, check_query,
                                 make_snippet)
from gog_jax.search.embedders import Embedder, GlyphEmbedder, embedder_name

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"\w+")
_STOPWORDS = frozenset(bm25s.stopwords.STOPWORDS_EN)


@dataclasses.dataclass(frozen=True)
class Record:
    """One indexed page: an optional image (uint8 [h, w, 3]) with its title and text."""

    source_id: str
    title: str
    text: str
    image: np.ndarray | None = None


def tokenize(text: str) -> list[str]:
    """NFKC, lower-case word tokens without English stopwords (corpus and queries alike)."""
    return [t for t in _TOKEN.findall(unicodedata.normalize("NFKC", text).lower()) if t not in _STOPWORDS]


def _rank(scores: np.ndarray, ids: np.ndarray, k: int) -> list[tuple[int, float]]:
    """(id, score) pairs of the k best distinct ids (an id repeated keeps its best score), by
    score descending then id ascending."""
    best: dict[int, float] = {}
    for i in np.lexsort((ids, -scores)):
        if len(best) == k:
            break
        best.setdefault(int(ids[i]), float(scores[i]))
    return list(best.items())


_MAX_VIEWS = 5


def image_views(image: np.ndarray, cut: float) -> list[np.ndarray]:
    """The image, then (when cut > 0 and the image is at least 5 px a side) the image without
    `cut` of its height or width at the top, bottom, left and right edge."""
    if cut <= 0 or min(image.shape[:2]) < 5:
        return [image]
    h, w = image.shape[:2]
    dy, dx = max(1, round(h * cut)), max(1, round(w * cut))
    return [image, image[dy:], image[:h - dy], image[:, dx:], image[:, :w - dx]]


class LocalIndex(SearchBackend):
    """Offline image + text search over a fixed set of records (see the module docstring)."""

    def __init__(self, records: Sequence[Record], embedder: Embedder | None = None, snippet_chars: int = 200,
                 *, cut_views: float = 0.2, thumbnails: Sequence[str | None] | None = None,
                 vectors: np.ndarray | None = None):
        """`cut_views`: share of the side cut off in the extra views (0: the image only);
        `thumbnails`: each record's image path relative to the index folder (default
        `images/{i:06d}.png` for records with an image); `vectors`: precomputed embeddings of
        the views of the records that have an image, in order (from `load`)."""
        ids = [r.source_id for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError("source ids must be unique")
        for r in records:
            if r.image is not None:
                try:
                    check_image(r.image)
                except SearchError as error:
                    raise ValueError(f"record {r.source_id!r}: {error}") from None
        self.records = list(records)
        self.embedder = embedder if embedder is not None else GlyphEmbedder()
        self.snippet_chars = snippet_chars
        self.cut_views = cut_views
        self.thumbnails = list(thumbnails) if thumbnails is not None else [
            f"images/{i:06d}.png" if r.image is not None else None for i, r in enumerate(self.records)]
        views = [(i, view) for i, r in enumerate(self.records) if r.image is not None
                 for view in image_views(r.image, cut_views)]
        self._views_per_image = _MAX_VIEWS if cut_views > 0 else 1  # at most
        self._vector_rows = np.array([i for i, _ in views], np.int64)  # faiss row -> record
        if vectors is None:
            vectors = self.embedder([view for _, view in views])
        self.vectors = np.ascontiguousarray(vectors, np.float32)
        if self.vectors.ndim != 2 or len(self.vectors) != len(views):
            raise ValueError(f"need one vector per view of a record's image ({len(views)}), "
                             f"got shape {self.vectors.shape}")
        self._faiss = faiss.IndexFlatIP(self.vectors.shape[1])
        self._faiss.add(self.vectors)
        corpus = [tokenize(f"{r.title} {r.text}") for r in self.records]
        self._bm25 = bm25s.BM25() if any(corpus) else None  # bm25s cannot index a corpus without words
        if self._bm25 is not None:
            self._bm25.index(corpus, show_progress=False)

    @functools.cached_property
    def identifier(self) -> str:
        """Changes whenever an answer could: records, thumbnails, embedder, snippet length.
        Computed once: the index is immutable after construction."""
        digest = hashlib.sha256()
        for r, thumb in zip(self.records, self.thumbnails):
            digest.update(json.dumps([r.source_id, r.title, r.text, thumb]).encode())
        digest.update(self.vectors.tobytes())
        return (f"local:{embedder_name(self.embedder)}:{self.snippet_chars}:{self.cut_views}:"
                f"{digest.hexdigest()[:16]}")

    # ----------------------------------------------------------------------------- search

    def _result(self, row: int, score: float) -> SearchResult:
        r = self.records[row]
        return SearchResult(r.title, make_snippet(r.text, self.snippet_chars), r.source_id, score, self.thumbnails[row])

    def image_search(self, image: np.ndarray, k: int) -> list[SearchResult]:
        image, k = check_image(image), check_k(k)
        n = len(self._vector_rows)
        if n == 0:
            return []
        query = np.ascontiguousarray(self.embedder(image[None]), np.float32)
        # Enough vectors to hold k + 32 distinct records; the 32 past k let exact ties at the
        # cut break by record order rather than by faiss's heap.
        scores, hits = self._faiss.search(query, min(n, self._views_per_image * (k + 32)))
        keep = hits[0] >= 0
        return [self._result(row, s) for row, s in _rank(scores[0][keep], self._vector_rows[hits[0][keep]], k)]

    def text_search(self, query: str, k: int) -> list[SearchResult]:
        query, k = check_query(query), check_k(k)
        if self._bm25 is None:
            return []
        token_ids = self._bm25.get_tokens_ids(tokenize(query))
        if not token_ids:
            return []
        scores = np.asarray(self._bm25.get_scores_from_ids(token_ids), np.float32)
        matched = np.flatnonzero(scores > 0)  # a page sharing no query word is not a result
        return [self._result(row, s) for row, s in _rank(scores[matched], matched, k)]

    # ----------------------------------------------------------------------------- disk

    def save(self, directory: str) -> None:
        """Writes the folder layout of the module docstring; `load` gives identical results."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "records.jsonl"), "w", encoding="utf-8") as f:
            for r, thumb in zip(self.records, self.thumbnails):
                if r.image is not None:
                    path = _inside(directory, thumb)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    Image.fromarray(r.image).save(path)
                f.write(json.dumps({"source_id": r.source_id, "title": r.title, "text": r.text, "image": thumb},
                                   ensure_ascii=False) + "\n")
        np.save(os.path.join(directory, "vectors.npy"), self.vectors)
        with open(os.path.join(directory, "meta.json"), "w", encoding="utf-8") as f:
            json.dump({"embedder": embedder_name(self.embedder), "snippet_chars": self.snippet_chars,
                       "cut_views": self.cut_views}, f)

    @classmethod
    def load(cls, directory: str, embedder: Embedder | None = None, snippet_chars: int | None = None,
             cut_views: float | None = None) -> "LocalIndex":
        """Reads a folder written by `save` or made by hand (then only records.jsonl and the
        images are needed); `snippet_chars` and `cut_views` default to the saved ones. Stored
        vectors are reused only if made by an embedder of the same name with the same views;
        otherwise the images are embedded again."""
        embedder = embedder if embedder is not None else GlyphEmbedder()
        meta_path = os.path.join(directory, "meta.json")
        meta = json.load(open(meta_path, encoding="utf-8")) if os.path.exists(meta_path) else {}
        records, thumbnails = [], []
        with open(os.path.join(directory, "records.jsonl"), encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    image = None if d.get("image") is None else _read_rgb(_inside(directory, d["image"]))
                    records.append(Record(str(d["source_id"]), str(d.get("title", "")), str(d.get("text", "")), image))
                except (KeyError, ValueError, OSError) as error:
                    raise ValueError(f"records.jsonl line {line_no}: {error}") from error
                thumbnails.append(d.get("image"))
        snippet_chars = int(meta.get("snippet_chars", 200)) if snippet_chars is None else snippet_chars
        cut_views = float(meta.get("cut_views", 0.2)) if cut_views is None else cut_views
        vectors = None
        vectors_path = os.path.join(directory, "vectors.npy")
        if os.path.exists(vectors_path):
            if (meta.get("embedder"), meta.get("cut_views")) == (embedder_name(embedder), cut_views):
                vectors = np.load(vectors_path)
            else:
                logger.info("re-embedding %s: stored vectors come from %s with cut_views=%s", directory,
                            meta.get("embedder"), meta.get("cut_views"))
        return cls(records, embedder, snippet_chars, cut_views=cut_views, thumbnails=thumbnails, vectors=vectors)

    from_folder = load


def build_index(records: Iterable, embedder: Embedder | None = None, snippet_chars: int = 200,
                cut_views: float = 0.2) -> LocalIndex:
    """A `LocalIndex` from any objects with source_id, title, text and image attributes (for
    instance the synthetic world's records)."""
    return LocalIndex([Record(r.source_id, r.title, r.text, r.image) for r in records], embedder, snippet_chars,
                      cut_views=cut_views)


def _inside(directory: str, relative: str) -> str:
    """`directory/relative`, refusing paths that climb out of the directory."""
    root = os.path.realpath(directory)
    path = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([root, path]) != root:
        raise ValueError(f"image path {relative!r} leaves the index folder")
    return path


def _read_rgb(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), np.uint8)
