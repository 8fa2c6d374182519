"""Eval mode: run a policy over the synthetic world or a public benchmark and write what it did.

    python -m gog_jax.main --config=configs/eval.py:policy=oracle --workdir=DIR
    python -m gog_jax.main --config=configs/eval.py:policy=model --config.model.checkpoint=CKPT
    python -m gog_jax.main --config=configs/eval.py:benchmark=fvqa,data=fvqa_test.parquet \
        --config.model.checkpoint=CKPT

writes under `DIR/eval/`: `summary.json` (DESIGN.md §2: accuracy, n, per_level by kind,
per_benchmark with skips and breakdowns, action counts), `trajectories.jsonl` (one conversation
per line, crops as source image + box; question images under `images/`), pictures of the
first episodes with their gaze boxes (`pictures/` and TensorBoard under `tensorboard/`) and
`report.html` (the first episodes turn by turn, self-contained).

Scripted policies (`POLICIES`) read the synthetic world's ground truth, so they run on the
world only; `policy=model` runs a checkpoint greedily through the rollout runner, on the world
(its local index) or on a benchmark (the web search backend behind a sqlite cache).
"""

import inspect
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import logging
from PIL import Image

from gog_jax.agent import env as env_lib
from gog_jax.agent import rewards, trajectory
from gog_jax.eval import benchmarks as benchmarks_lib
from gog_jax.eval import model_eval, report
from gog_jax.eval.episodes import EpisodeResult, Policy, run_episode
from gog_jax.eval.report import summarize
from gog_jax.sampling import SamplingParams
from gog_jax.search import CachedBackend, WebSearchBackend, WebSearchConfig
from gog_jax.train import build, metrics
from gog_jax.world import index as index_lib
from gog_jax.world import oracle as oracle_lib
from gog_jax.world.world import World, WorldConfig, build_world

WORLD = "gog_world"  # the benchmark name of the synthetic world
MODEL = "model"  # the policy name of a checkpoint

# name -> factory(config, world, env_config) -> Policy
POLICIES: dict[str, Callable[..., Policy]] = {
    "oracle": lambda config, world, env_config: oracle_lib.Oracle(
        wrong_crop_share=config.oracle.wrong_crop_share, gaze_config=env_config.gaze, grammar=env_config.grammar,
        seed=config.oracle.seed),
    "glance_only": lambda config, world, env_config: oracle_lib.GlanceOnlyOracle(
        [e.name for e in world.entities], grammar=env_config.grammar),
}


def score(result: EpisodeResult, accuracy: rewards.Accuracy, lam: float) -> dict[str, float]:
    return rewards.episode_reward(result.prediction, result.question.answers, result.assistant_texts,
                                  accuracy=accuracy, question=result.question.question, lam=lam)


def run_scripted(world: World, backend, policy: Policy, env_config: env_lib.EnvConfig, questions: Sequence,
                 accuracy: rewards.Accuracy = rewards.exact_match,
                 lam: float = 0.1) -> tuple[list[EpisodeResult], list[dict[str, float]]]:
    """One episode of `policy` per world question; the results and their scores."""
    env = env_lib.GoGEnv(backend, env_config)
    results = [run_episode(env, policy, oracle_lib.env_question(world, q), oracle_lib.question_meta(world, q))
               for q in questions]
    return results, [score(r, accuracy, lam) for r in results]


def evaluate(world: World, backend, policy: Policy, env_config: env_lib.EnvConfig, split: str = "test",
             num_questions: int = -1, accuracy: rewards.Accuracy = rewards.exact_match, lam: float = 0.1,
             out_dir: str | None = None, benchmark: str = WORLD, num_pictures: int = 0) -> dict[str, Any]:
    """Runs `policy` on the split's questions; returns the summary.

    With `out_dir`: `trajectories.jsonl`, the question images under `images/`, and pictures of
    the first `num_pictures` episodes (gaze boxes drawn) under `pictures/`.
    """
    questions = world.questions[split]
    questions = questions if num_questions < 0 else questions[:num_questions]
    start = time.perf_counter()
    results, scores = run_scripted(world, backend, policy, env_config, questions, accuracy, lam)
    summary = summarize(results, scores, benchmark)
    summary["episodes_seconds"] = time.perf_counter() - start
    if out_dir is not None:
        write_trajectories(out_dir, results, scores, num_pictures)
    return summary


# ---------------------------------------------------------------------------- outputs


def write_trajectories(out_dir: str, results: Sequence[EpisodeResult], scores: Sequence[dict[str, float]],
                       num_pictures: int = 0) -> None:
    """`trajectories.jsonl` + question images under `images/`, pictures of the first episodes under `pictures/`."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "trajectories.jsonl"), "w", encoding="utf-8") as f:
        for i, (result, episode_score) in enumerate(zip(results, scores)):
            q = result.question
            image_path = _save_image(q.image, out_dir, f"images/{_file_name(q.id)}.png")
            boxes = [rec["box"] for rec in result.trace if rec.get("box") is not None]
            if i < num_pictures:
                _save_image(report.draw_trajectory(q.image, boxes, report.picture_scale(q.image)), out_dir,
                            f"pictures/{_file_name(q.id)}.png")
            meta = {**result.meta, "kind": q.kind, "answer": list(q.answers), "prediction": result.prediction,
                    "truncated": result.truncated, "trace": _json_safe(result.trace), **episode_score}
            record = trajectory.to_record(q.id, result.turns, boxes, image_path, _json_safe(meta))
            f.write(json.dumps(record, sort_keys=True) + "\n")


def write_tensorboard(logdir: str, results: Sequence[EpisodeResult], summary: dict[str, Any], num_pictures: int,
                      step: int = 0) -> None:
    """The summary's numbers and pictures of the first episodes (gaze boxes drawn), as training writes them."""
    writer = metrics.make_writer(logdir)
    writer.write_scalars(step, metrics.scalars("eval", {
        "accuracy": summary["accuracy"], **{f"accuracy_{k}": v["accuracy"] for k, v in summary["per_level"].items()
                                            if v["n"]}}))
    metrics.write_pictures(writer, step, [(r.question.id, r.question.image,
                                           [rec["box"] for rec in r.trace if rec.get("box") is not None])
                                          for r in results[:num_pictures]])
    writer.flush()
    writer.close()


def _file_name(qid: str) -> str:
    """A question id as a file name (benchmark ids may hold slashes)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in qid)


def _save_image(image: np.ndarray, root: str, relative_path: str) -> str:
    path = os.path.join(root, relative_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path)
    return relative_path


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


# ---------------------------------------------------------------------------- the mode


def accuracy_name(config) -> str:
    """config.accuracy, else the benchmark's own judge (exact match in the world)."""
    return config.accuracy or benchmarks_lib.DEFAULT_JUDGES.get(config.benchmark, "exact_match")


def make_accuracy(config) -> rewards.Accuracy:
    name = accuracy_name(config)
    if name != "llm_judge":
        return rewards.make_accuracy(name)
    j = config.judge
    return rewards.make_accuracy(name, base_url=j.base_url, model=j.model, api_key_env=j.api_key_env or None,
                                 cache_path=os.path.expanduser(j.cache_path) if j.cache_path else None)


def web_backend(config):
    """The web search backend (key from the environment variable `search.api_key_env`), in the sqlite cache."""
    s = config.search
    fields = {k: s[k] for k in ("base_url", "image_endpoint", "text_endpoint", "reader_url") if s[k]}
    backend = WebSearchBackend.from_env(WebSearchConfig(**fields), api_key_env=s.api_key_env)
    if not s.cache_path:
        return backend
    path = os.path.expanduser(s.cache_path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return CachedBackend(backend, path, record_failures=s.record_failures)


def _check(config) -> None:
    if config.policy != MODEL and config.policy not in POLICIES:
        raise ValueError(f"Unknown policy {config.policy!r}; known: {sorted([*POLICIES, MODEL])}.")
    if config.benchmark != WORLD:
        if config.benchmark not in benchmarks_lib.LOADERS:
            raise ValueError(f"Unknown benchmark {config.benchmark!r}; known: {[WORLD, *sorted(benchmarks_lib.LOADERS)]}.")
        if config.policy != MODEL:
            raise ValueError(f"policy={config.policy} is a scripted policy of the synthetic world (it reads the "
                             f"world's ground truth); benchmark {config.benchmark} needs policy=model.")
        if not config.data:
            raise ValueError(f"benchmark {config.benchmark} needs its file: data=PATH (configs/eval.py).")


def _benchmark_questions(config) -> tuple[list[env_lib.Question], dict[str, dict], dict[str, int]]:
    takes = inspect.signature(benchmarks_lib.LOADERS[config.benchmark]).parameters
    kwargs = {k: v for k, v in (("image_dir", config.image_dir), ("qtype_path", config.qtype)) if v and k in takes}
    loaded, skipped = benchmarks_lib.load_benchmark(config.benchmark, config.data, limit=config.num_questions,
                                                    **kwargs)
    return [b.question for b in loaded], {b.question.id: dict(b.meta) for b in loaded}, skipped


def run(config, workdir: str) -> dict[str, Any]:
    """The `eval` mode of `gog_jax.main`."""
    _check(config)
    out_dir = os.path.join(workdir, "eval")
    accuracy = make_accuracy(config)
    info: dict[str, Any] = {"policy": config.policy, "benchmark": config.benchmark, "judge": accuracy_name(config)}
    skipped: dict[str, int] = {}
    if config.benchmark == WORLD:
        world = build_world(WorldConfig.from_flat(config.world))
        start = time.perf_counter()
        backend = index_lib.world_backend(world, cache_dir=config.index_dir or None)
        info.update(split=config.split, world_seconds=world.build_seconds, index_seconds=time.perf_counter() - start)
        logging.info("world built in %.2f s, index in %.2f s", world.build_seconds, info["index_seconds"])
        world_questions = world.questions[config.split]
        world_questions = world_questions if config.num_questions < 0 else world_questions[:config.num_questions]
        questions = [oracle_lib.env_question(world, q) for q in world_questions]
        metas: dict[str, dict] = {}
    else:
        world = None
        backend = web_backend(config)
        questions, metas, skipped = _benchmark_questions(config)
        info["data"] = config.data

    start = time.perf_counter()
    if config.policy == MODEL:
        runner = model_eval.model_runner(config, backend, accuracy)
        params = SamplingParams(temperature=0.0, max_new_tokens=config.max_new_tokens)
        try:
            summary, trajectories = model_eval.evaluate_model(runner, questions, params, config.benchmark, config.seed,
                                                              metas=metas, skipped=skipped)
        finally:
            runner.close()
        results = model_eval.episode_results(trajectories, questions, metas)
        scores = [t.reward for t in trajectories]
    else:
        env_config = build.env_config(config)  # as the model policy's runner sees it
        results, scores = run_scripted(world, backend, POLICIES[config.policy](config, world, env_config), env_config,
                                       world_questions, accuracy, config.lam)
        summary = summarize(results, scores, config.benchmark, skipped)
    summary.update(info, episodes_seconds=time.perf_counter() - start)

    if config.write_trajectories:
        write_trajectories(out_dir, results, scores, config.num_pictures)
    if config.html_episodes:
        report.write_html(os.path.join(out_dir, "report.html"), results[:config.html_episodes],
                          scores[:config.html_episodes], summary,
                          title=f"{config.policy} on {config.benchmark}")
    if config.num_pictures:
        write_tensorboard(os.path.join(out_dir, "tensorboard"), results, summary, config.num_pictures)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    logging.info("eval summary written to %s", os.path.join(out_dir, "summary.json"))
    return summary
