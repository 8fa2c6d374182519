"""Evidence mode: does gazing pay? GoG against a glance-only policy trained the same way.

    python -m gog_jax.main --config=configs/grpo.py:evidence

Two arms run the whole pipeline (`pipeline.run`) with the same model, world, budgets and seeds:
`gog` SFTs on the oracle mixture (gaze demonstrated), `glance_only` on demonstrations that never
gaze (`sft.glance_only_share=1`, `sft.wrong_crop_share=0`); both then run the same GRPO. The
comparison is accuracy on the held-out *gaze* questions (the kind a glance cannot solve), with a
paired bootstrap interval over those questions.
"""

import json
import os
from typing import Any

from gog_jax import hosts
from gog_jax.eval.model_eval import paired_bootstrap
from gog_jax.train import pipeline


def arm_config(config, arm: str):
    c = config.copy_and_resolve_references()
    if arm == "glance_only":
        c.sft.glance_only_share, c.sft.wrong_crop_share = 1.0, 0.0
    return c


def _gaze_accuracy(workdir: str, stage: str) -> dict[str, float]:
    with open(os.path.join(workdir, "eval", stage, "result.json"), encoding="utf-8") as f:
        result = json.load(f)
    return {qid: acc for qid, acc in result["per_question"].items() if qid in result["gaze_qids"]}


def run(config, workdir: str) -> dict[str, Any]:
    summaries = {arm: pipeline.run(arm_config(config, arm), os.path.join(workdir, arm))
                 for arm in ("gog", "glance_only")}
    gog, glance = (_gaze_accuracy(os.path.join(workdir, arm), "grpo") for arm in ("gog", "glance_only"))
    qids = sorted(gog)
    summary = {
        "gaze_accuracy": {arm: s["grpo"]["per_level"]["gaze"] for arm, s in summaries.items()},
        "overall_accuracy": {arm: s["grpo"]["accuracy"] for arm, s in summaries.items()},
        "gog_minus_glance_only_on_gaze": paired_bootstrap([glance[q] for q in qids], [gog[q] for q in qids],
                                                          seed=config.seed),
        "arms": {arm: os.path.join(workdir, arm) for arm in summaries},
    }
    if hosts.is_primary():
        with open(os.path.join(workdir, "evidence.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
    return summary
