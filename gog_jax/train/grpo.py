"""Complexity-adaptive GRPO on multi-turn Glance-or-Gaze rollouts (stage 2).

One step: the curriculum draws questions (weighted toward `level2`); each is prefilled once and
forked into G rollouts; rewards -> group advantages (estimator by name); groups with zero reward
variance are dropped or replaced by fresh questions (config); trajectories are packed into
fixed-shape batches; the learner takes one optimizer step (clipped token-level surrogate,
clip-higher, optional k3 KL, truncated importance weights against the sampler's log-probs);
the engine then reads the new parameters in place; pass rates are updated from the groups.
Everything a step depends on is a function of the checkpointed state (parameters, optimizer,
curriculum, step-derived seeds), so a resumed run repeats an uninterrupted one exactly.
"""

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from gog_jax.agent import env as env_lib
from gog_jax.eval.model_eval import evaluate_model
from gog_jax.rollout.packing import Example, Packed
from gog_jax.rollout.runner import RolloutRunner, Trajectory, seed_of
from gog_jax.sampling import SamplingParams
from gog_jax.train import build, checkpoint, losses, metrics
from gog_jax.train.curriculum import CurriculumSampler, PassRates
from gog_jax.train.step import Learner


def sampling_params(config, temperature: float | None = None) -> SamplingParams:
    g = config.grpo
    return SamplingParams(temperature=g.temperature if temperature is None else temperature, top_p=g.top_p,
                          max_new_tokens=g.max_new_tokens)


@dataclasses.dataclass
class Groups:
    """The rollouts of one step, grouped by question: rewards and accuracies [Q, G]."""

    qids: list[str]
    trajectories: list[list[Trajectory]]
    rewards: np.ndarray
    accuracy: np.ndarray

    @classmethod
    def of(cls, trajectories: Sequence[Trajectory], group_size: int) -> "Groups":
        by_q: dict[str, list[Trajectory]] = {}
        for t in trajectories:
            by_q.setdefault(t.qid, []).append(t)
        groups = [g for g in by_q.values() if len(g) == group_size]
        return cls([g[0].qid for g in groups], groups,
                   np.array([[t.reward["reward"] for t in g] for g in groups], np.float32).reshape(-1, group_size),
                   np.array([[t.reward["accuracy"] for t in g] for g in groups], np.float32).reshape(-1, group_size))

    def informative(self) -> np.ndarray:
        """[Q] bool: groups whose rewards differ (the others carry no GRPO signal)."""
        return self.rewards.max(axis=1) > self.rewards.min(axis=1)


def rollout_step(config, runner: RolloutRunner, sampler: CurriculumSampler, pass_rates: PassRates,
                 questions: dict[str, env_lib.Question], step: int) -> tuple[Groups, dict[str, float]]:
    """Draws questions and rolls out G episodes each; with `zero_variance=resample`, redraws to
    replace uninformative groups (up to `max_resample_rounds`). Pass rates are updated from every group."""
    g = config.grpo
    wanted, collected, rounds, drawn = g.questions_per_step, [], 0, 0
    while True:
        qids = sampler.sample(wanted)
        trajectories = runner.run([questions[q] for q in qids], sampling_params(config), group_size=g.group_size,
                                  seed=seed_of(config.seed, "grpo", step, rounds))
        groups = Groups.of(trajectories, g.group_size)
        drawn += len(qids)
        for qid, acc in zip(groups.qids, groups.accuracy):
            pass_rates.update(qid, acc.tolist())
        collected.append(groups)
        informative = sum(int(x.informative().sum()) for x in collected)
        rounds += 1
        if g.zero_variance != "resample" or informative >= g.questions_per_step or rounds > g.max_resample_rounds:
            break
        wanted = g.questions_per_step - informative
    merged = Groups([q for x in collected for q in x.qids], [t for x in collected for t in x.trajectories],
                    np.concatenate([x.rewards for x in collected]), np.concatenate([x.accuracy for x in collected]))
    return merged, {"questions_drawn": drawn, "rollout_rounds": rounds}


def examples_of(config, groups: Groups) -> tuple[list[Example], dict[str, float]]:
    """Advantages per group (zero-variance groups dropped unless `zero_variance=keep`) -> examples."""
    g = config.grpo
    keep = groups.informative() if g.zero_variance != "keep" else np.ones(len(groups.qids), bool)
    advantages = np.asarray(losses.advantages(g.advantage, groups.rewards)) if len(groups.qids) else groups.rewards
    examples = [Example(t.token_ids, t.loss_mask, t.images, float(a), t.logprobs, f"{t.qid}/{i}")
                for k, group, adv in zip(keep, groups.trajectories, advantages) if k
                for i, (t, a) in enumerate(zip(group, adv))]
    return examples, {"groups": len(groups.qids), "groups_informative": int(groups.informative().sum()),
                      "groups_trained": int(keep.sum())}


def step_scales(packed: Packed, aggregation: str) -> list[float]:
    """Each micro-batch's share of the step's normaliser (tokens, or sequences for the seq modes)."""
    share = packed.trained_tokens if aggregation == "token_mean" else packed.segments
    sizes = [share(i) for i in range(len(packed))]
    total = max(sum(sizes), 1)
    return [s / total for s in sizes]


def rollout_metrics(groups: Groups) -> dict[str, float]:
    flat = [t for group in groups.trajectories for t in group]
    if not flat:
        return {}
    out = {"reward_mean": float(groups.rewards.mean()), "accuracy_mean": float(groups.accuracy.mean()),
           "format_mean": float(np.mean([t.reward["format"] for t in flat])),
           "response_tokens_mean": float(np.mean([t.loss_mask.sum() for t in flat])),
           "sequence_tokens_mean": float(np.mean([len(t.token_ids) for t in flat])),
           "truncated": float(sum(t.truncated is not None for t in flat)),
           "tool_errors": float(sum(bool(r.get("error")) for t in flat for r in t.trace))}
    kinds = {t.kind for t in flat if t.kind}
    for kind in sorted(kinds):
        out[f"accuracy_{kind}"] = float(np.mean([t.reward["accuracy"] for t in flat if t.kind == kind]))
    out.update(metrics.tool_use_rates([t.actions for t in flat]))
    return out


def probe(config, runner: RolloutRunner, questions: Sequence[env_lib.Question], writer, step: int) -> None:
    """Greedy accuracy on held-out questions, and pictures of a few episodes (gaze boxes drawn)."""
    summary, trajectories = evaluate_model(runner, questions, sampling_params(config, 0.0))
    writer.write_scalars(step, {"eval/accuracy": summary["accuracy"],
                                **{f"eval/accuracy_{k}": v["accuracy"] for k, v in summary["per_level"].items()}})
    metrics.write_pictures(writer, step, [(t.qid, t.images[0], [r["box"] for r in t.trace if r.get("box")])
                                          for t in trajectories[:config.grpo.pictures]])


def train(config, workdir: str, learner: Learner, runner: RolloutRunner, questions: dict[str, env_lib.Question],
          pass_rates: PassRates, eval_questions: Sequence[env_lib.Question] = ()) -> dict[str, Any]:
    """The GRPO loop (resumes from `workdir/checkpoints`); returns the history and counts."""
    g = config.grpo
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), every=config.checkpoint.every,
                                   keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
    history: list[dict[str, float]] = []
    start, extra = 0, None
    if ckpt.latest_step() is not None:
        start = ckpt.latest_step()
        state, extra = ckpt.restore(start, learner.abstract_state())
        learner.load_state(state)
        pass_rates = PassRates.from_json(extra["pass_rates"])
        history = extra["history"]
        logging.info("GRPO resumed at step %d", start)
    sampler = CurriculumSampler(sorted(questions), pass_rates, weights=dict(g.curriculum_weights),
                                skip_solved=g.skip_solved, seed=config.seed)
    if extra is not None:
        sampler.load_state_dict(extra["sampler"])
    runner.engine.update_params(learner.params)
    writer = metrics.make_writer(os.path.join(workdir, "tensorboard"))
    progress = metrics.Progress(g.steps, writer, config.log_every_seconds, name="grpo")
    try:
        for step in range(start, g.steps):
            t0 = time.perf_counter()
            groups, counts = rollout_step(config, runner, sampler, pass_rates, questions, step)
            t_rollout = time.perf_counter() - t0
            examples, group_counts = examples_of(config, groups)
            packed = Packed(examples, learner.model_config, runner.vision, build.pack_config(config))
            out: dict[str, float] = {**counts, **group_counts, **rollout_metrics(groups),
                                     "dropped_examples": float(len(packed.dropped)),
                                     **{f"dropped/{k}": float(v) for k, v in packed.reasons.items()},
                                     "failed_to_start_total": float(len(runner.failures)), "rollout_seconds": t_rollout}
            if len(packed):
                out.update(learner.step([packed.batch(i) for i in range(len(packed))],
                                        step_scales(packed, g.aggregation)))
                runner.engine.update_params(learner.params)
            out["step_seconds"] = time.perf_counter() - t0
            out.update({f"levels/{k}": float(v) for k, v in sampler.level_counts().items()})
            history.append({k: float(v) for k, v in out.items()})
            writer.write_scalars(step + 1, metrics.scalars("grpo", out))
            if g.eval_every and (step + 1) % g.eval_every == 0 and eval_questions:
                probe(config, runner, eval_questions, writer, step + 1)
            progress(step + 1, force=step + 1 == g.steps)
            if ckpt.should_save(step + 1) or step + 1 == g.steps:
                ckpt.save(step + 1, learner.state(), {"step": step + 1, "sampler": sampler.state_dict(),
                                                      "pass_rates": pass_rates.to_json(), "history": history})
    finally:  # also on an interruption: finish the async save in flight
        ckpt.close()
    writer.flush()
    return {"steps": g.steps, "history": history}
