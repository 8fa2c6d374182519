"""Each benchmark's published layout, written small into tmp_path with real PNG/JPEG bytes,
including a corrupt image and a record without answers: loaded questions, answers, skip counts."""

import base64
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gog_jax.agent import rewards
from gog_jax.eval import benchmarks

RNG = np.random.default_rng(0)
PNG_PIXELS = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)
JPEG_COLOUR = (200, 40, 90)
CORRUPT = b"\x89PNG\r\n\x1a\n this is not an image"


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


PNG = _encode(PNG_PIXELS, "PNG")
JPEG = _encode(np.full((10, 12, 3), JPEG_COLOUR, np.uint8), "JPEG")


def _write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def _write_jsonl(path, rows, extra_lines=()):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + "".join(extra_lines),
                    encoding="utf-8")
    return str(path)


def _check_images(questions):
    """First question: the PNG, pixel for pixel; second: the JPEG, up to compression."""
    np.testing.assert_array_equal(questions[0].question.image, PNG_PIXELS)
    jpeg = questions[1].question.image
    assert jpeg.dtype == np.uint8 and jpeg.shape == (10, 12, 3)
    assert np.abs(jpeg.astype(int) - JPEG_COLOUR).max() <= 4


def test_fvqa_verl_parquet(tmp_path, caplog):
    def row(i, image, reward, category="search_required"):
        return {"prompt": [{"content": f"<image>What is shown in picture {i}?", "role": "user"}],
                "images": [{"bytes": image}], "reward_model": {**reward, "style": "rule"},
                "data_source": "mmsearch_r1/fvqa_train", "image_urls": None, "data_id": f"fvqa_train_{i}",
                "category": category}
    path = _write_parquet(tmp_path / "fvqa_train.parquet", [
        row(0, PNG, {"candidate_answers": "[]", "ground_truth": "namus"}, "search_free"),
        row(1, JPEG, {"candidate_answers": '["Eiffel Tower", "la tour Eiffel"]', "ground_truth": "Eiffel Tower"}),
        row(2, CORRUPT, {"candidate_answers": "[]", "ground_truth": "x"}),
        row(3, PNG, {"candidate_answers": "[]", "ground_truth": None}),
        row(4, PNG, {"candidate_answers": "[]", "ground_truth": "  "}),
    ])
    questions, skipped = benchmarks.load_benchmark("fvqa", path)
    assert skipped == {"corrupt_image": 1, "missing_answer": 2}
    (line,) = [r.getMessage() for r in caplog.records if "fvqa" in r.getMessage()]  # one line for all skips
    assert "corrupt_image=1 (first: fvqa_train_2), missing_answer=2 (first: fvqa_train_3)" in line
    assert [q.question.id for q in questions] == ["fvqa_train_0", "fvqa_train_1"]
    assert {q.benchmark for q in questions} == {"fvqa"}
    first, second = questions
    assert first.question.question == "What is shown in picture 0?" and first.question.answers == ("namus",)
    assert second.question.answers == ("Eiffel Tower", "la tour Eiffel")
    assert first.meta == {"data_source": "mmsearch_r1/fvqa_train", "category": "search_free"}
    assert first.question.kind == ""
    _check_images(questions)


def test_infoseek_jsonl_with_oven_images_and_qtypes(tmp_path):
    images = tmp_path / "oven" / "01"
    images.mkdir(parents=True)
    (images / "oven_01963180.png").write_bytes(PNG)  # sharded: found by stem at any depth
    (tmp_path / "oven" / "oven_00000002.jpg").write_bytes(JPEG)
    (tmp_path / "oven" / "oven_00000003.jpg").write_bytes(CORRUPT)
    rows = [
        {"data_id": "infoseek_val_0", "image_id": "oven_01963180", "question": "Which place is this animal endemic to?",
         "answer": ["People's Republic of China"], "answer_eval": ["cn", "People's Republic of China", "China"],
         "data_split": "val_unseen_question"},
        {"data_id": "infoseek_val_1", "image_id": "oven_00000002", "question": "How tall is this building?",
         "answer": ["324 metre"], "answer_eval": [{"wikidata": 324.0, "range": [300.0, 350.0]}],
         "data_split": "val_unseen_entity"},
        {"data_id": "infoseek_val_2", "image_id": "oven_00000003", "question": "q", "answer": ["a"],
         "answer_eval": ["a"], "data_split": "val_unseen_entity"},
        {"data_id": "infoseek_val_3", "image_id": "oven_01963180", "question": "no answers here"},
        {"data_id": "infoseek_val_4", "image_id": "oven_99999999", "question": "q", "answer": ["a"],
         "answer_eval": ["a"], "data_split": "val_unseen_entity"},
    ]
    path = _write_jsonl(tmp_path / "infoseek_val.jsonl", rows, extra_lines=["{not json\n"])
    qtype = _write_jsonl(tmp_path / "infoseek_val_qtype.jsonl",
                         [{"data_id": "infoseek_val_0", "question_type": "String"},
                          {"data_id": "infoseek_val_1", "question_type": "Numerical"}])
    questions, skipped = benchmarks.load_benchmark("infoseek", path, image_dir=str(tmp_path / "oven"),
                                                   qtype_path=qtype)
    assert skipped == {"corrupt_image": 1, "missing_answer": 1, "missing_image": 1, "malformed_record": 1}
    first, second = questions
    assert first.question.answers == ("cn", "People's Republic of China", "China")
    assert first.meta == {"data_split": "val_unseen_question", "question_type": "String"}
    assert second.question.answers == ("324", "324 metre")
    assert second.meta == {"data_split": "val_unseen_entity", "question_type": "Numerical", "range": [300.0, 350.0]}
    _check_images(questions)
    with pytest.raises(ValueError, match="image_dir"):
        benchmarks.load_benchmark("infoseek", path)


def test_infoseek_sub2k_parquet(tmp_path):
    path = _write_parquet(tmp_path / "mmsearch_r1_infoseek_sub_2k.parquet", [
        {"prompt": [{"content": "Who built this?", "role": "user"}], "images": [{"bytes": PNG}],
         "reward_model": {"ground_truth": "Gustave Eiffel", "candidate_answers": '["G. Eiffel"]'},
         "data_id": "infoseek_sub_0", "data_source": "infoseek"},
        {"prompt": [{"content": "Who?", "role": "user"}], "images": [],
         "reward_model": {"ground_truth": "x", "candidate_answers": "[]"}, "data_id": "infoseek_sub_1",
         "data_source": "infoseek"},
    ])
    questions, skipped = benchmarks.load_benchmark("infoseek", path)
    assert skipped == {"missing_image": 1}
    assert questions[0].question.answers == ("Gustave Eiffel", "G. Eiffel") and questions[0].benchmark == "infoseek"


def test_simplevqa_base64_parquet(tmp_path):
    def row(i, image, answer="足阳明胃经", language="CN"):
        return {"data_id": i, "image": image, "image_description": "", "language": language,
                "question": "图中所示穴位所属的经脉是什么?", "answer": answer, "original_category": "中华文化_中医",
                "vqa_category": "culture", "source": "https://baike.baidu.com/x", "atomic_question": "",
                "atomic_fact": ""}
    path = _write_parquet(tmp_path / "test.parquet", [
        row(0, base64.b64encode(PNG).decode()),
        row(1, "data:image/jpeg;base64," + base64.b64encode(JPEG).decode(), answer="Paris", language="EN"),
        row(2, base64.b64encode(CORRUPT).decode()),
        row(3, base64.b64encode(PNG).decode(), answer=None),
        row(4, None),
    ])
    questions, skipped = benchmarks.load_benchmark("simplevqa", path)
    assert skipped == {"corrupt_image": 1, "missing_answer": 1, "missing_image": 1}
    assert [q.question.id for q in questions] == ["0", "1"]
    assert questions[0].question.answers == ("足阳明胃经",) and questions[1].question.answers == ("Paris",)
    assert questions[0].question.question == "图中所示穴位所属的经脉是什么?"
    assert questions[1].meta == {"language": "EN", "vqa_category": "culture", "original_category": "中华文化_中医"}
    _check_images(questions)


def test_mmsearch_end2end_parquet(tmp_path):
    def row(i, image, gt="2024-09-29 to 2024-10-04", alternatives=()):
        return {"sample_id": f"technology_{i}", "query": "Which days does this conference run from and to?",
                "query_image": None if image is None else {"bytes": image, "path": None},
                "image_search_result": {"bytes": JPEG, "path": None}, "area": "news", "subfield": "technology",
                "timestamp": "2024-09-29", "gt_requery": "ECCV 2024 dates", "gt_answer": gt,
                "alternative_gt_answers": list(alternatives)}
    path = _write_parquet(tmp_path / "end2end.parquet", [
        row(0, PNG, alternatives=["Sep 29 - Oct 4, 2024"]),
        row(1, JPEG),
        row(2, None),
        row(3, CORRUPT),
        row(4, PNG, gt=None),
    ])
    questions, skipped = benchmarks.load_benchmark("mmsearch", path)
    assert skipped == {"text_only": 1, "corrupt_image": 1, "missing_answer": 1}
    assert questions[0].question.answers == ("2024-09-29 to 2024-10-04", "Sep 29 - Oct 4, 2024")
    assert questions[0].meta == {"area": "news", "subfield": "technology", "timestamp": "2024-09-29"}
    _check_images(questions)


def test_livevqa_research_preview_json(tmp_path):
    (tmp_path / "image").mkdir()
    (tmp_path / "image" / "859587b317_Conan.png").write_bytes(PNG)
    (tmp_path / "image" / "aa_b.jpg").write_bytes(JPEG)
    (tmp_path / "image" / "bad.jpg").write_bytes(JPEG[: len(JPEG) // 3])  # truncated JPEG
    rows = [
        {"sample_id": "Movies_2_2", "query": "When is this film released?",
         "query_image": "/mnt/authors/LiveVQA/image/859587b317_Conan.png", "gt_answer": "March 15, 2026"},
        {"sample_id": "News_1_1", "query": "Who is this?", "query_image": "image/aa_b.jpg", "gt_answer": "Ada"},
        {"sample_id": "News_1_2", "query": "Who?", "query_image": "/mnt/x/bad.jpg", "gt_answer": "Bob"},
        {"sample_id": "News_1_3", "query": "Who?", "query_image": "/mnt/x/aa_b.jpg"},
        {"sample_id": "News_1_4", "query": "Who?", "query_image": "/mnt/x/gone.jpg", "gt_answer": "Bob"},
    ]
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    questions, skipped = benchmarks.load_benchmark("livevqa", str(path))
    assert skipped == {"corrupt_image": 1, "missing_answer": 1, "missing_image": 1}
    assert [(q.question.id, q.question.answers) for q in questions] == [
        ("Movies_2_2", ("March 15, 2026",)), ("News_1_1", ("Ada",))]
    _check_images(questions)


def test_livevqa_full_release_benchmark_json(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "bbc_1.png").write_bytes(PNG)
    (images / "bbc_2.jpg").write_bytes(JPEG)
    (images / "bbc_3.jpg").write_bytes(CORRUPT)

    def qa(question, truths):
        return {"question": question, "question_type": "person", "options": ["A. Dave Smith", "B. Ann Lee"],
                "Ground_Truth": "A", "Ground_Truth_List": truths, "img_url": "https://ichef.bbci.co.uk/x.png"}
    rows = [
        {"id": "0_1", "img_path": "bbc_1.png", "source": "BBC Health", "time": "2025-04-29T05:19:56.004Z",
         "level1_qa": qa("Who is performing on stage?", ["Dave Smith", "Mr Smith"]),
         "level2_qa": qa("Where did he study?", [])},
        {"id": "0_2", "img_path": "bbc_2.jpg", "source": "BBC", "time": "t",
         "level1_qa": qa("Who is this?", ["Ann Lee"])},
        {"id": "0_3", "img_path": "bbc_3.jpg", "source": "BBC", "time": "t",
         "level1_qa": qa("q1", ["a"]), "level2_qa": qa("q2", ["b"])},
    ]
    path = tmp_path / "News" / "benchmark.json"
    path.parent.mkdir()
    path.write_text(json.dumps(rows), encoding="utf-8")
    questions, skipped = benchmarks.load_benchmark("livevqa", str(path), image_dir=str(images))
    assert skipped == {"missing_answer": 1, "corrupt_image": 2}
    assert [(q.question.id, q.question.answers) for q in questions] == [
        ("0_1_level1", ("Dave Smith", "Mr Smith")), ("0_2_level1", ("Ann Lee",))]
    assert questions[0].meta == {"level": "level1", "question_type": "person", "source": "BBC Health",
                                 "time": "2025-04-29T05:19:56.004Z"}
    _check_images(questions)


def test_dynvqa_jsonl_with_downloaded_images(tmp_path):
    images = tmp_path / "dl"
    (images / "dyn" / "en").mkdir(parents=True)
    (images / "dyn" / "en" / "image_98.png").write_bytes(PNG)  # mirrored URL path
    (images / "image_7.jpeg").write_bytes(JPEG)  # flat, by file name
    (images / "image_8.jpeg").write_bytes(CORRUPT)
    host = "https://mitalinlp.oss-cn-hangzhou.aliyuncs.com"
    rows = [
        {"image_url": f"{host}/dyn/en/image_98.png", "question": "What is this person's current club?",
         "question_id": "en302", "answer": ["Al-Nassr FC", "Al Nassr"], "golden_query": "Ronaldo's club?"},
        {"image_url": f"{host}/dyn/zh/image_7.jpeg", "question": "这座桥有多长?", "question_id": "zh1",
         "answer": [1280, "1280米"]},
        {"image_url": f"{host}/dyn/en/image_8.jpeg", "question": "q", "question_id": "en3", "answer": ["a"]},
        {"image_url": f"{host}/dyn/en/image_98.png", "question": "q", "question_id": "en4"},
        {"image_url": f"{host}/dyn/en/image_404.png", "question": "q", "question_id": "en5", "answer": ["a"]},
    ]
    path = _write_jsonl(tmp_path / "DynVQA_en.202502.jsonl", rows)
    questions, skipped = benchmarks.load_benchmark("dynvqa", path, image_dir=str(images))
    assert skipped == {"corrupt_image": 1, "missing_answer": 1, "missing_image": 1}
    first, second = questions
    assert first.question.answers == ("Al-Nassr FC", "Al Nassr") and second.question.answers == ("1280", "1280米")
    assert first.meta == {"language": "en", "golden_query": "Ronaldo's club?"} and second.meta == {"language": "zh"}
    _check_images(questions)
    # without image_dir nothing is fetched: every URL image is missing (checked before the answer)
    assert benchmarks.load_benchmark("dynvqa", path)[1] == {"missing_image": 5}


def test_limit_unknown_name_and_judges(tmp_path):
    rows = [{"image_url": "x.png", "question": f"q{i}", "question_id": f"en{i}", "answer": ["a"]} for i in range(5)]
    (tmp_path / "x.png").write_bytes(PNG)
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    questions, skipped = benchmarks.load_benchmark("dynvqa", path, limit=2)
    assert [q.question.id for q in questions] == ["en0", "en1"] and skipped == {}
    with pytest.raises(ValueError, match="Unknown benchmark"):
        benchmarks.load_benchmark("okvqa", path)
    assert set(benchmarks.DEFAULT_JUDGES) == set(benchmarks.LOADERS) == {
        "fvqa", "infoseek", "simplevqa", "mmsearch", "livevqa", "dynvqa"}
    assert set(benchmarks.DEFAULT_JUDGES.values()) <= set(rewards.ACCURACY_FACTORIES)
    assert benchmarks.DEFAULT_JUDGES["mmsearch"] == "f1" and benchmarks.DEFAULT_JUDGES["fvqa"] == "exact_match"


def test_decode_image_converts_modes():
    grey = _encode(np.full((3, 4), 7, np.uint8), "PNG")
    rgba = _encode(np.full((3, 4, 4), 9, np.uint8), "PNG")
    assert benchmarks.decode_image(grey).shape == (3, 4, 3) and benchmarks.decode_image(grey).max() == 7
    assert benchmarks.decode_image(rgba).shape == (3, 4, 3)
    assert benchmarks.decode_image(base64.b64encode(PNG)) is not None
    assert benchmarks.decode_image(b"") is None and benchmarks.decode_image(CORRUPT) is None
