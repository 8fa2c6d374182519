import json

from gog_jax.agent import tokenizer as tok_lib
from gog_jax.agent.tokenizer import DEFAULT_VOCAB_SIZE, SPECIAL_TOKENS, load_tokenizer, train_tokenizer

EXPECTED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>", "<think>", "</think>", "<glance/>", "<gaze>", "</gaze>",
            "<search>", "</search>", "<answer>", "</answer>", "<information>", "</information>"]


def test_special_ids_are_fixed(tiny_tokenizer):
    assert SPECIAL_TOKENS == {name: i for i, name in enumerate(EXPECTED)}
    assert tiny_tokenizer.special_ids == SPECIAL_TOKENS
    for name, i in SPECIAL_TOKENS.items():
        assert tiny_tokenizer.backend.token_to_id(name) == i
        assert tiny_tokenizer.encode(name).tolist() == [i]
    ids = tiny_tokenizer.encode("<think>ok</think><gaze>[1, 2, 3, 4]</gaze>").tolist()
    assert ids[0] == 7 and 8 in ids and ids[-1] == 11 and ids.count(10) == 1


def test_vocab_size_and_byte_fallback(tiny_tokenizer):
    assert tiny_tokenizer.vocab_size == tiny_tokenizer.backend.get_vocab_size() <= DEFAULT_VOCAB_SIZE
    text = "Ünïcödé ✓ emblem 日本 \t\n  spaces"
    assert tiny_tokenizer.decode(tiny_tokenizer.encode(text)) == text
    assert tiny_tokenizer.backend.token_to_id("[UNK]") is None


def test_decode_inverts_encode_on_actions(tiny_tokenizer, qwen_tokenizer):
    from gog_jax.agent import protocol
    text = protocol.format_action(protocol.Gaze((3, 4, 50.5, 60)), think="the badge, top-left") + "<|im_end|>\n"
    for tokenizer in (tiny_tokenizer, qwen_tokenizer):
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_training_is_deterministic(corpus, tmp_path):
    a, b = train_tokenizer(corpus), train_tokenizer(list(corpus))
    assert a.backend.to_str() == b.backend.to_str()
    a.save(str(tmp_path / "a"))
    b.save(str(tmp_path / "b"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_save_load_round_trip(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save(str(tmp_path))
    loaded = load_tokenizer(str(tmp_path))
    text = "<|im_start|>user\nWho founded Kavor Lin?<|im_end|>\n"
    assert loaded.encode(text).tolist() == tiny_tokenizer.encode(text).tolist()
    assert loaded.special_ids == SPECIAL_TOKENS
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["chat_template"] == tok_lib.CHAT_TEMPLATE and config["eos_token"] == "<|im_end|>"


def test_a_checkpoints_own_template_survives_export(tiny_tokenizer, tmp_path):
    """A folder's template (wherever HF keeps it) is the one an export writes back."""
    tiny_tokenizer.backend.save(str(tmp_path / "tokenizer.json"))
    assert load_tokenizer(str(tmp_path)).chat_template == tok_lib.CHAT_TEMPLATE  # none shipped: ours
    for name, content, expected in [("tokenizer_config.json", json.dumps({"chat_template": "A"}), "A"),
                                    ("chat_template.json", json.dumps({"chat_template": "B"}), "B"),
                                    ("chat_template.jinja", "C", "C")]:  # each added file takes precedence
        (tmp_path / name).write_text(content)
        assert load_tokenizer(str(tmp_path)).chat_template == expected
    load_tokenizer(str(tmp_path)).save(str(tmp_path / "export"))
    assert load_tokenizer(str(tmp_path / "export")).chat_template == "C"


def test_hf_loads_our_files(tiny_tokenizer, tmp_path):
    from transformers import AutoTokenizer
    tiny_tokenizer.save(str(tmp_path))
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    text = hf.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n" \
                   "<|im_start|>assistant\n"
    assert hf.convert_tokens_to_ids("<|im_end|>") == 2 and hf.eos_token_id == 2


def test_qwen_vocabulary_specials(qwen_tokenizer):
    assert qwen_tokenizer.special_ids == {
        "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
        "<|vision_end|>": 151653, "<|image_pad|>": 151655, "<|video_pad|>": 151656}
    # Well-known Qwen2 ids: "Hello" 9707, " world" 1879, "\n" 198.
    assert qwen_tokenizer.encode("Hello world\n").tolist() == [9707, 1879, 198]


def test_stop_sequences(tiny_tokenizer, qwen_tokenizer):
    from gog_jax.agent import protocol
    stops = tok_lib.stop_token_sequences(tiny_tokenizer, protocol.stop_strings())
    assert stops == [[9], [11], [13], [15]]
    assert all(len(s) > 1 for s in tok_lib.stop_token_sequences(qwen_tokenizer, protocol.stop_strings()))
