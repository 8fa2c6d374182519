"""LocalIndex: image near-duplicate search, BM25 ranking, snippets, save/load, determinism."""

from concurrent.futures import ThreadPoolExecutor
import json

import numpy as np
import pytest
from PIL import Image

from gog_jax.search import GlyphEmbedder, LocalIndex, Record, SearchError, SearchResult
from gog_jax.search.base import make_snippet
from gog_jax.search.local_index import image_views, tokenize
from tests.search.conftest import GLYPHS, grid_scene, jitter_box, reference_image

TEXTS = {
    "river": "The Velmora mill stands on the river bank. Its river wheel was built in 1821.",
    "harbour": "Ostrel harbour is a fishing harbour with a lighthouse and a fish market.",
    "choir": "The Brennick choir sings at the abbey every Sunday; the choir was founded in 1902.",
    "mill": "A mill museum about grain, flour and the history of the mill trade.",
}


@pytest.fixture(scope="module")
def glyphs():
    rng = np.random.default_rng(1)
    return [GLYPHS[i] for i in rng.choice(len(GLYPHS), 40, replace=False)]


@pytest.fixture(scope="module")
def records(glyphs):
    """40 glyph pages with images, plus 4 text-only pages."""
    out = [Record(f"entity-{i:03d}", f"Entity {i}", f"Entity {i} is page number {i}. " + "Filler words. " * 30,
                  reference_image(g)) for i, g in enumerate(glyphs)]
    out += [Record(f"text-{key}", key.title(), text, None) for key, text in TEXTS.items()]
    return out


@pytest.fixture(scope="module")
def index(records):
    return LocalIndex(records, snippet_chars=60)


def test_exact_duplicates_rank_first_with_cosine_one(index, records):
    for r in records[:40]:
        hits = index.image_search(r.image, k=3)
        assert hits[0].source_id == r.source_id
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert hits[0].score > hits[1].score >= hits[2].score


def test_results_carry_title_snippet_thumbnail(index, records):
    hit = index.image_search(records[5].image, k=1)[0]
    assert hit.title == "Entity 5"
    assert hit.thumbnail == "images/000005.png"
    assert hit.snippet == make_snippet(records[5].text, 60)
    assert len(hit.snippet) <= 61 and hit.snippet.endswith("…") and hit.snippet.startswith("Entity 5 is page")


def test_jittered_crops_of_scenes_retrieve_their_page(index, glyphs):
    rng = np.random.default_rng(2)
    right = total = 0
    for _ in range(20):
        pick = rng.choice(len(glyphs), 8, replace=False)
        scene, boxes = grid_scene(rng, [glyphs[i] for i in pick])
        for i, box in zip(pick, boxes):
            x1, y1, x2, y2 = jitter_box(rng, box, 0.15, 168)
            right += index.image_search(scene[y1:y2, x1:x2], k=1)[0].source_id == f"entity-{i:03d}"
            total += 1
    assert right / total >= 0.95


def test_text_only_pages_never_come_from_image_search(index, records):
    ids = {h.source_id for h in index.image_search(records[0].image, k=100)}
    assert len(ids) == 40 and not any(i.startswith("text-") for i in ids)


def test_bm25_ranking(index):
    hits = index.text_search("river mill", k=5)
    assert [h.source_id for h in hits[:2]] == ["text-river", "text-mill"]  # both words, river twice
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert index.text_search("choir founded", k=1)[0].source_id == "text-choir"
    assert index.text_search("Ostrel HARBOUR", k=1)[0].source_id == "text-harbour"  # case-insensitive
    assert index.text_search("lighthouse", k=10) == index.text_search("lighthouse", k=1)  # only matches
    assert index.text_search("zeppelin", k=5) == []  # no shared word, no result
    assert index.text_search("the of and", k=5) == []  # stopwords only
    assert index.text_search("Entity 7", k=1)[0].source_id == "entity-007"  # titles are indexed


def test_tokenize_normalises():
    assert tokenize("Ｔｈｅ  Mill's RIVER-bank") == ["mill", "s", "river", "bank"]


def test_ties_break_by_record_order():
    image = reference_image(GLYPHS[0])
    records = [Record(f"dup-{i}", f"Dup {i}", "same words here", image) for i in (3, 1, 2)]
    index = LocalIndex(records)
    assert [h.source_id for h in index.image_search(image, k=3)] == ["dup-3", "dup-1", "dup-2"]
    assert [h.source_id for h in index.text_search("same words", k=2)] == ["dup-3", "dup-1"]


def test_deterministic_across_builds(records):
    a, b = LocalIndex(records), LocalIndex(records)
    query = records[7].image[5:50, 3:52]
    assert a.image_search(query, k=10) == b.image_search(query, k=10)
    assert a.text_search("harbour fish", k=10) == b.text_search("harbour fish", k=10)
    assert a.identifier == b.identifier != LocalIndex(records[:-1]).identifier


def test_save_load_round_trip_identical(index, records, tmp_path):
    index.save(str(tmp_path))
    loaded = LocalIndex.load(str(tmp_path))
    assert loaded.snippet_chars == 60
    assert loaded.identifier == index.identifier
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    for r in records[::3]:
        if r.image is not None:
            assert loaded.image_search(r.image[4:, 2:], k=7) == index.image_search(r.image[4:, 2:], k=7)
    for query in ("river mill", "choir", "Entity 12 page", "nothing matches"):
        assert loaded.text_search(query, k=6) == index.text_search(query, k=6)
    # the thumbnail path points at the saved image
    hit = loaded.image_search(records[3].image, k=1)[0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / hit.thumbnail)), records[3].image)


def test_load_with_another_embedder_re_embeds(index, records, tmp_path):
    index.save(str(tmp_path))
    other = GlyphEmbedder(dim=64)
    loaded = LocalIndex.load(str(tmp_path), embedder=other)
    assert loaded.vectors.shape == (40 * 5, 64)
    np.testing.assert_array_equal(loaded.vectors, other([v for r in records[:40] for v in image_views(r.image, 0.2)]))
    plain = LocalIndex.load(str(tmp_path), cut_views=0.0)  # other views: embedded again
    assert plain.vectors.shape == (40, 256) and plain.cut_views == 0.0
    np.testing.assert_array_equal(plain.vectors, GlyphEmbedder()([r.image for r in records[:40]]))


def test_image_views():
    image = np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3)
    views = image_views(image, 0.2)
    assert [v.shape[:2] for v in views] == [(10, 20), (8, 20), (8, 20), (10, 16), (10, 16)]
    np.testing.assert_array_equal(views[1], image[2:])
    np.testing.assert_array_equal(views[4], image[:, :16])
    assert len(image_views(image, 0.0)) == 1
    assert len(image_views(image[:4], 0.2)) == 1  # too small to cut
    tiny = LocalIndex([Record("t", "", "", image[:2, :3]), Record("u", "", "", image)])
    assert [h.source_id for h in tiny.image_search(image[:2, :3], k=2)][0] == "t"
    assert tiny.text_search("anything", k=2) == []  # a corpus without words


def test_each_record_once_scored_by_its_best_view(index, records):
    hits = index.image_search(records[9].image[:, 12:], k=40)
    assert len({h.source_id for h in hits}) == 40
    assert hits[0].source_id == "entity-009"


def test_views_rescue_boxes_that_cut_into_the_glyph(records, glyphs):
    """Tight glyph boxes with each edge jittered by up to 15% of the side: the jitter often cuts
    into the glyph, and the cut views are what still finds it."""
    rng = np.random.default_rng(3)
    crops, targets = [], []
    for _ in range(15):
        pick = rng.choice(len(glyphs), 8, replace=False)
        scene, glyph_boxes = grid_scene(rng, [glyphs[i] for i in pick], glyph_boxes=True)
        for i, box in zip(pick, glyph_boxes):
            x1, y1, x2, y2 = jitter_box(rng, box, 0.15, 168)
            crops.append(scene[y1:y2, x1:x2])
            targets.append(f"entity-{i:03d}")
    rates = {}
    for cut in (0.0, 0.2):
        index = LocalIndex(records, cut_views=cut)
        rates[cut] = np.mean([index.image_search(c, k=1)[0].source_id == t for c, t in zip(crops, targets)])
    assert rates[0.2] >= 0.93 and rates[0.2] >= rates[0.0] + 0.03, rates


def test_from_hand_made_folder(tmp_path):
    (tmp_path / "pics").mkdir()
    image = reference_image(GLYPHS[10])
    Image.fromarray(image).save(tmp_path / "pics" / "a.png")
    Image.fromarray(image).convert("RGBA").save(tmp_path / "pics" / "b.png")  # converted to RGB
    lines = [{"source_id": "a", "title": "Alpha", "text": "alpha text", "image": "pics/a.png"},
             {"source_id": "b", "title": "Beta", "text": "beta text", "image": "pics/b.png"},
             {"source_id": "c", "title": "Gamma", "text": "gamma text", "image": None}]
    (tmp_path / "records.jsonl").write_text("\n".join(json.dumps(d) for d in lines) + "\n")
    index = LocalIndex.from_folder(str(tmp_path))
    hits = index.image_search(image, k=5)
    assert [h.source_id for h in hits] == ["a", "b"] and [h.thumbnail for h in hits] == ["pics/a.png", "pics/b.png"]
    (gamma,) = index.text_search("gamma", k=5)
    assert gamma == SearchResult("Gamma", "gamma text", "c", gamma.score, None) and gamma.score > 0


def test_folder_paths_cannot_escape(tmp_path):
    (tmp_path / "records.jsonl").write_text(json.dumps({"source_id": "x", "title": "", "text": "",
                                                        "image": "../outside.png"}) + "\n")
    with pytest.raises(ValueError, match="leaves the index folder"):
        LocalIndex.load(str(tmp_path))


def test_bad_inputs_raise_search_error(index):
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32),
                np.zeros((0, 10, 3), np.uint8), [[1, 2, 3]]):
        with pytest.raises(SearchError):
            index.image_search(bad, k=3)
    for k in (0, -1, 2.5, True):
        with pytest.raises(SearchError):
            index.text_search("river", k=k)
    with pytest.raises(SearchError):
        index.text_search(None, k=3)


def test_bad_records_rejected():
    with pytest.raises(ValueError, match="unique"):
        LocalIndex([Record("a", "", "x"), Record("a", "", "y")])
    with pytest.raises(ValueError, match="record 'g'.*uint8"):
        LocalIndex([Record("g", "", "x", np.zeros((4, 4, 3), np.float32))])


def test_empty_index_answers_nothing():
    assert LocalIndex([]).image_search(reference_image(GLYPHS[0]), k=1) == LocalIndex([]).text_search("a", 1) == []
    index = LocalIndex([Record("a", "Alpha", "alpha text")])
    assert index.image_search(reference_image(GLYPHS[0]), k=3) == []
    assert [h.source_id for h in index.text_search("alpha", k=3)] == ["a"]


def test_concurrent_searches_match_serial(index, records):

    queries = [r.image[3:, :-4] for r in records[:40:4]]
    serial = [index.image_search(q, k=3) for q in queries] + [index.text_search(t, k=3) for t in TEXTS]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda q: index.image_search(q, k=3), queries)) + list(
            pool.map(lambda t: index.text_search(t, k=3), TEXTS))
    assert parallel == serial
