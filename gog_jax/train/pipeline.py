"""The `grpo` mode: the paper's two stages end to end, as the main job runs them.

    python -m gog_jax.main --config=configs/grpo.py

1. SFT the model on the oracle mixture (or reuse the export cached by config hash; skipped when
   `--config.model.checkpoint` names a trained folder);
2. calibrate pass rates of the training questions with k rollouts (complexity levels);
3. evaluate the SFT policy greedily on held-out questions;
4. GRPO with the complexity-adaptive curriculum;
5. evaluate the GRPO policy on the same questions; a paired bootstrap interval of the accuracy
   change; `summary.json`, trajectories and pictures under the workdir.
Each stage leaves its result in the workdir and is skipped on resume.
"""

import json
import os
import time
from typing import Any

from absl import logging
from PIL import Image

from gog_jax import hosts
from gog_jax.agent import trajectory as trajectory_lib
from gog_jax.eval import report
from gog_jax.eval.model_eval import episode_results, evaluate_model, paired_bootstrap
from gog_jax.train import build, calibrate, grpo, sft
from gog_jax.train.curriculum import PassRates
from gog_jax.train.step import Learner
from gog_jax.world import oracle as oracle_lib


def _cached_json(path: str, compute):
    """The JSON at `path`, else compute() written there (a stage done before a restart is not redone).

    Every host computes (stages run collectives), process 0 writes."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    value = compute()
    if hosts.is_primary():
        _write_json(path, value)
    hosts.barrier(f"stage:{path}")
    return value


def _write_json(path: str, value) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True, default=str)


def _evaluation(runner, questions, config, out_dir: str) -> dict[str, Any]:
    """Greedy evaluation; writes trajectories.jsonl, pictures and report.html; returns summary +
    per-question accuracy."""
    summary, trajectories = evaluate_model(runner, questions, grpo.sampling_params(config, 0.0))
    result = {"summary": summary, "per_question": {t.qid: t.reward["accuracy"] for t in trajectories},
              "gaze_qids": [t.qid for t in trajectories if t.kind == "gaze"]}
    if not hosts.is_primary():
        return result
    os.makedirs(os.path.join(out_dir, "pictures"), exist_ok=True)
    shown = trajectories[:config.eval.pictures]
    report.write_html(os.path.join(out_dir, "report.html"), episode_results(shown, questions),
                      [t.reward for t in shown], summary)
    with open(os.path.join(out_dir, "trajectories.jsonl"), "w", encoding="utf-8") as f:
        for i, t in enumerate(trajectories):
            boxes = [r["box"] for r in t.trace if r.get("box") is not None]
            image_path = f"pictures/{t.qid}.png"
            if i < config.eval.pictures:
                Image.fromarray(report.draw_trajectory(t.images[0], boxes)).save(os.path.join(out_dir, image_path))
            meta = {"kind": t.kind, "prediction": t.prediction, "truncated": t.truncated, **t.reward}
            f.write(json.dumps(trajectory_lib.to_record(t.qid, t.turns, boxes, image_path, meta), sort_keys=True,
                               default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)) + "\n")
    return result


def run(config, workdir: str) -> dict[str, Any]:
    start = time.perf_counter()
    g = config.grpo
    world, backend = build.world(config)
    checkpoint_dir, sft_summary = config.model.checkpoint, None
    if not checkpoint_dir and g.init == "sft":
        sft_summary = sft.cached_or_train(config, workdir, (world, backend))
        checkpoint_dir = sft_summary["export_dir"]
    t_sft = time.perf_counter() - start
    model = build.model(config, checkpoint=checkpoint_dir)
    tokenizer = build.tokenizer(config)
    learner = Learner(model, build.optimizer(config, g, g.steps), build.loss_config(config, "grpo"),
                      build.mesh(config), build.rules(config), lora=bool(config.lora.rank), reference=g.kl_coef > 0,
                      master_dtype=config.optim.master_dtype or None)
    runner = build.runner(config, model, backend, tokenizer, params=learner.params)
    train_questions = {q.qid: oracle_lib.env_question(world, q) for q in world.questions["train"][:g.num_questions]}
    eval_questions = [oracle_lib.env_question(world, q)
                      for q in world.questions[config.eval.split][:config.eval.num_questions]]
    probe_questions = [oracle_lib.env_question(world, q)
                       for q in world.questions["validation"][:config.eval.probe_questions]]

    c = config.curriculum
    calibration_qids = sorted(train_questions)[:c.questions]

    def calibrate_now():
        rates = calibrate.estimate(runner, [train_questions[q] for q in calibration_qids], c.k,
                                   grpo.sampling_params(config), PassRates(decay=g.pass_rate_decay), config.seed)
        return rates.to_json()
    t0 = time.perf_counter()
    pass_rates = PassRates.from_json(_cached_json(os.path.join(workdir, "curriculum", "calibrated.json"),
                                                  calibrate_now)) if c.k else PassRates(decay=g.pass_rate_decay)
    t_calibrate = time.perf_counter() - t0
    levels = calibrate.level_counts(pass_rates, calibration_qids)
    logging.info("calibrated levels: %s", levels)

    t0 = time.perf_counter()
    before = _cached_json(os.path.join(workdir, "eval", "sft", "result.json"),
                          lambda: _evaluation(runner, eval_questions, config, os.path.join(workdir, "eval", "sft")))
    t_eval = time.perf_counter() - t0
    trained = grpo.train(config, os.path.join(workdir, "grpo"), learner, runner, train_questions, pass_rates,
                         probe_questions)
    after = _cached_json(os.path.join(workdir, "eval", "grpo", "result.json"),
                         lambda: _evaluation(runner, eval_questions, config, os.path.join(workdir, "eval", "grpo")))
    runner.close()
    qids = sorted(before["per_question"])
    change = paired_bootstrap([before["per_question"][q] for q in qids],
                              [after["per_question"].get(q, 0.0) for q in qids], seed=config.seed)
    summary = {
        "sft": {"accuracy": before["summary"]["accuracy"], "per_level": before["summary"]["per_level"],
                "actions": before["summary"]["actions"], "training": sft_summary},
        "grpo": {"accuracy": after["summary"]["accuracy"], "per_level": after["summary"]["per_level"],
                 "actions": after["summary"]["actions"], "steps": trained["steps"],
                 "last_step": trained["history"][-1] if trained["history"] else None},
        "accuracy_change": change,
        "calibration": {"levels": levels, "k": c.k},
        "eval_questions": len(eval_questions),
        "seconds": {"total": time.perf_counter() - start, "sft": t_sft, "calibrate": t_calibrate,
                    "eval_sft": t_eval},
        "workdir": workdir,
    }
    if hosts.is_primary():
        _write_json(os.path.join(workdir, "summary.json"), summary)
    logging.info("accuracy SFT %.3f -> GRPO %.3f (delta %.3f, 95%% CI [%.3f, %.3f])", summary["sft"]["accuracy"],
                 summary["grpo"]["accuracy"], change["delta"], change["low"], change["high"])
    return summary
