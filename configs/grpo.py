"""The main job: SFT -> calibrate -> GRPO -> evaluate on the embedded default (tiny model, synthetic world).

    python -m gog_jax.main --config=configs/grpo.py[:smoke|:evidence]

Args (comma-separated): smoke (the 2-minute run the tests share: small world, a few steps),
evidence (GoG vs a glance-only policy trained the same way; about an hour on CPU), world=small,
model=NAME (a preset of configs/common.py, e.g. qwen3_vl_tiny).
Bring a real checkpoint with `--config.model.checkpoint=/path/to/Qwen2.5-VL-7B-Instruct`
(SFT is then skipped: the named folder is the starting policy).
"""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, {"smoke", "evidence", "world", "model"})
    c = common.base("grpo", args.get("model", "tiny"))
    c.sft = common.sft(c)
    c.grpo = common.grpo(c)
    c.curriculum = common.curriculum(c)
    c.eval = common.evaluation(c)
    if "smoke" in args:
        common.smoke(c)
    if "evidence" in args:  # GoG vs glance-only, both trained the same way (about an hour on 2 CPU cores)
        c.mode = "evidence"
        c.sft.steps = 1500
        c.grpo.update(steps=30, questions_per_step=16)
        c.eval.num_questions = 600  # the whole test split: ~200 gaze questions
    if args.get("world") == "small":
        common.small_world(c)
    return c
