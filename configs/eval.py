"""Evaluation: `--config=configs/eval.py:policy=oracle` (synthetic world) or a checkpoint on a benchmark.

    --config=configs/eval.py:policy=model --config.model.checkpoint=DIR
    --config=configs/eval.py:benchmark=fvqa,data=fvqa_test.parquet --config.model.checkpoint=DIR

Arg presets (comma-separated k=v):
  policy=oracle|glance_only|model  scripted policies (world only) or the checkpoint in model.checkpoint
  model=NAME                 the model preset (configs/common.py; e.g. qwen3_vl_8b): its family's image
                             processing and box frame, and the weights of policy=model without a checkpoint
  world=default|small        the world's size (small: a few-second world for smoke tests)
  n=INT                      evaluate only the first n questions (of the split, or of the benchmark file)
  split=test|validation|train
  faults=FLOAT               share of searches that fail on purpose (fault injection)
  benchmark=NAME             gog_world (default) or fvqa|infoseek|simplevqa|mmsearch|livevqa|dynvqa;
                             a benchmark implies policy=model, the web search backend and the
                             settings of a real Qwen2.5-VL checkpoint (full prompt, bf16, long sequences)
  data=PATH                  the benchmark's file (gog_jax/eval/benchmarks.py lists the formats)
  image_dir=DIR              where InfoSeek / LiveVQA / Dyn-VQA images were downloaded to
  qtype=PATH                 InfoSeek's infoseek_val_qtype.jsonl (question types in the breakdown)
  accuracy=NAME              exact_match|f1|llm_judge (default: the benchmark's own, see DEFAULT_JUDGES;
                             llm_judge reads --config.judge.{base_url,model,api_key_env,cache_path})

The model, tokenizer, engine and env fields are those of configs/common.py (`base`), so a
checkpoint is evaluated with the settings it was trained with.
"""

import ml_collections

from configs import common

WORLD = "gog_world"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, {"policy", "model", "world", "n", "split", "faults", "benchmark", "data", "image_dir",
                                  "qtype", "accuracy"})
    c = common.base("eval", args.get("model", "tiny"))
    benchmark = args.get("benchmark", WORLD)
    c.policy = args.get("policy", "oracle" if benchmark == WORLD else "model")
    c.split = args.get("split", "test")
    c.num_questions = int(args.get("n", -1))  # -1: all
    c.benchmark = benchmark
    c.data = args.get("data", "")
    c.image_dir = args.get("image_dir", "")
    c.qtype = args.get("qtype", "")  # InfoSeek: infoseek_val_qtype.jsonl adds question types to the breakdown
    if args.get("world") == "small":
        common.small_world(c)
    c.env.fault_rate = float(args.get("faults", 0.0))

    c.oracle = ml_collections.ConfigDict(dict(wrong_crop_share=0.25, seed=0))
    c.max_new_tokens = 48  # per assistant turn, greedy (policy=model)
    c.accuracy = args.get("accuracy", "")  # "": the benchmark's own judge (benchmarks.DEFAULT_JUDGES; exact_match in the world)
    # llm_judge: an OpenAI-compatible chat endpoint; the key is read from the variable named in api_key_env
    c.judge = ml_collections.ConfigDict(dict(base_url="", model="", api_key_env="", cache_path=""))
    # web search for benchmarks ("" keeps gog_jax.search.WebSearchConfig's default); key from api_key_env
    c.search = ml_collections.ConfigDict(dict(
        base_url="", image_endpoint="", text_endpoint="", reader_url="", api_key_env="SERPER_API_KEY",
        cache_path="~/.cache/gog_jax/search.sqlite",  # "" disables the cache
        record_failures=False))  # True: failed searches are cached too (an exact replay of a run)

    c.write_trajectories = True
    c.num_pictures = 16  # first episodes drawn (gaze boxes) under eval/pictures and eval/tensorboard
    c.html_episodes = 32  # first episodes in eval/report.html (0: no report)

    if benchmark != WORLD:
        real_checkpoint(c)
    return c


def real_checkpoint(c: ml_collections.ConfigDict) -> None:
    """Settings of a released Qwen2.5-VL checkpoint (7B) on real photos, in place of the tiny world's."""
    c.model.dtype = "bfloat16"
    c.vision.update(min_pixels=56 * 56, max_pixels=1280 * 28 * 28)
    c.env.update(prompt="full", max_response_tokens=8192)
    c.engine.update(num_slots=16, max_seq_len=8192, decode_steps=32)
    c.max_new_tokens = 1024
