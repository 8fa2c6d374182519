import json

from gog_jax.agent import protocol, rewards
from gog_jax.world.demonstrations import write_demonstrations
from gog_jax.world.rename import Renamer, name_words


def _texts(record):
    return [c["text"] for m in record["messages"] for c in m["content"] if c["type"] == "text"]


def _demonstrations(world, backend, path, **kwargs):
    stats = write_demonstrations(world, backend, str(path), split="train", glance_only_share=0.0, **kwargs)
    return stats, [json.loads(line) for line in open(stats["path"], encoding="utf-8")]


def test_renamed_demonstrations_stay_correct(small_world, small_backend, tmp_path):
    stats, records = _demonstrations(small_world, small_backend, tmp_path, rename_share=1.0)
    assert stats["renamed"] == len(records) and stats["accuracy"]["oracle"] == 1.0
    searched = 0
    for record in records:
        texts = _texts(record)
        assert record["meta"]["renamed"] is True
        action = protocol.parse_action(texts[-1])
        assert isinstance(action, protocol.Answer)
        assert rewards.exact_match(action.text, record["meta"]["answers"]) == 1.0, record["id"]
        for query, observation in zip(texts[2::2], texts[3::2]):  # a query finds the renamed page
            if isinstance(protocol.parse_action(query), protocol.Search):
                searched += 1
                assert protocol.parse_action(query).query in observation
    assert searched > 0


def test_renaming_is_consistent_per_episode_and_differs_between_episodes(small_world, small_backend, tmp_path):
    _, plain = _demonstrations(small_world, small_backend, tmp_path / "plain")
    _, renamed = _demonstrations(small_world, small_backend, tmp_path / "renamed", rename_share=1.0)
    _, again = _demonstrations(small_world, small_backend, tmp_path / "again", rename_share=1.0)
    assert renamed == again  # a pure function of the world, the seed and the question id
    words = set(name_words(small_world))
    fresh_of = {}  # entity name -> its fresh name in each episode that names it
    for a, b in zip(plain, renamed):
        assert "renamed" not in a["meta"]
        for x, y in zip(_texts(a), _texts(b)):
            assert x.count("\n") == y.count("\n") and len(x.split()) == len(y.split())  # word for word
            for u, v in zip(x.split(), y.split()):
                if u.strip(".,:;") in words:
                    fresh_of.setdefault((a["id"], u.strip(".,:;")), set()).add(v.strip(".,:;"))
    assert fresh_of and all(len(v) == 1 for v in fresh_of.values())  # one fresh word per word per episode
    by_word = {}
    for (_, word), fresh in fresh_of.items():
        by_word.setdefault(word, set()).update(fresh)
    assert max(len(v) for v in by_word.values()) > 1  # another episode, another name
    assert {w for v in by_word.values() for w in v} <= words  # drawn from the world's own names


def test_a_renaming_is_an_injection_of_names_and_years(small_world):
    renamer = Renamer(small_world, seed=3)
    words = name_words(small_world)
    texts = [" ".join(words) + " founded in 1851, 1900 and 1851."]
    mapping = renamer.mapping(texts, "q")
    assert set(mapping) == set(words) | {"1851", "1900"}
    assert len(set(mapping.values())) == len(mapping) and set(mapping[w] for w in words) <= set(words)
    assert mapping == renamer.mapping(texts, "q") != renamer.mapping(texts, "r")


def test_partial_share_renames_that_share(small_world, small_backend, tmp_path):
    stats, records = _demonstrations(small_world, small_backend, tmp_path, rename_share=0.5)
    assert 0.2 * len(records) <= stats["renamed"] <= 0.8 * len(records)
    assert stats["renamed"] == sum(bool(r["meta"].get("renamed")) for r in records)
