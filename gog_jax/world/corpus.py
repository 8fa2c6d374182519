"""The embedded default tokenizer: trained on the world's text, shipped as a package asset.

The corpus is everything the tiny model reads or writes in the default world: the protocol's
prompts and messages, the knowledge base (titles and pages), every question and answer, every
proper name equally often (so each is one token), and the assistant turns and observations of
scripted episodes (oracle and glance-only). Training
is deterministic, so `python -m gog_jax.world.corpus` regenerates `gog_jax/assets/tokenizer/`
byte for byte (a test checks it).
"""

import os
import sys

from gog_jax.agent import env as env_lib
from gog_jax.agent import gaze as gaze_lib
from gog_jax.agent import protocol
from gog_jax.agent.tokenizer import DEFAULT_VOCAB_SIZE, Tokenizer, load_tokenizer, train_tokenizer
from gog_jax.eval.episodes import run_episode
from gog_jax.world import index as index_lib
from gog_jax.world import oracle as oracle_lib
from gog_jax.world.kb import entity_page
from gog_jax.world.rename import name_words
from gog_jax.world.world import SPLITS, World, WorldConfig, build_world

ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "tokenizer")


def world_texts(world: World) -> list[str]:
    """The KB and the questions/answers of every split."""
    texts = [entity_page(e) for e in world.entities] + [e.name for e in world.entities]
    texts += [f"{g.title}: {g.text}" for g in world.galleries]
    for split in SPLITS:
        for q in world.questions.get(split, []):
            texts += [q.question, *q.answers]
    return texts


def error_texts(image_hw: tuple[int, int] = (168, 168)) -> list[str]:
    """The messages a model reads after a malformed turn or a bad box (RL rollouts see them)."""
    config = gaze_lib.GazeConfig()
    boxes = [(100, 10, 20, 90), (30, 30, 30, 90), (400, 400, 500, 500), (0, 0, 1, 150), (1, 2, 3)]
    texts = [getattr(gaze_lib.resolve_box(box, image_hw, config), "message", "") for box in boxes]
    turns = ["<think>no action</think>", "<glance/>", "<think>x</think><gaze>[1, 2]</gaze>",
             "<think>x</think><gaze>left</gaze>", "<think>x</think><search></search>",
             "<think>x</think><answer>a</answer><glance/>", "<think>x</think><search>a"]
    texts += [getattr(protocol.parse_action(t), "message", "") for t in turns]
    return [t for t in texts if t]


def episode_texts(world: World, backend, episodes_per_policy: int = 300, split: str = "train") -> list[str]:
    """Assistant turns and observations of scripted episodes on the first questions of `split`
    (one search in ten failing on purpose, so failure notes are in the corpus too)."""
    config = env_lib.EnvConfig(fault_rate=0.1)
    env = env_lib.GoGEnv(backend, config)
    policies = [oracle_lib.Oracle(wrong_crop_share=0.5, gaze_config=config.gaze),
                oracle_lib.GlanceOnlyOracle([e.name for e in world.entities])]
    texts = []
    for policy in policies:
        for question in world.questions[split][:episodes_per_policy]:
            result = run_episode(env, policy, oracle_lib.env_question(world, question),
                                 oracle_lib.question_meta(world, question))
            texts += [t.text for t in result.turns[2:]]
    return texts


def name_texts(world: World, repeats: int = 50) -> list[str]:
    """Every proper-name word of the world, equally often, so that each becomes one token.

    Without these, a name's tokenisation follows how often the corpus mentions it: the
    training split's entities (most questions, all scripted episodes) became single tokens and
    the held-out entities split into 3-5 pieces, a train/test shift in the very tokens that the
    search questions make the model copy.
    """
    words = name_words(world)  # after a space (" Name") and at a line's start ("<think>Name ...")
    return [" ".join(words)] * repeats + ["\n".join(words)] * repeats


def corpus(world: World, backend) -> list[str]:
    return (protocol.corpus_texts() + error_texts() + world_texts(world) + name_texts(world)
            + episode_texts(world, backend))


def build_default_tokenizer(config: WorldConfig = WorldConfig(), vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    world = build_world(config)
    return train_tokenizer(corpus(world, index_lib.world_backend(world)), vocab_size)


def default_tokenizer() -> Tokenizer:
    """The shipped tokenizer of the embedded default (`gog_jax/assets/tokenizer/`)."""
    return load_tokenizer(ASSET_DIR)


def main(argv: list[str]) -> None:
    """`python -m gog_jax.world.corpus [OUT_DIR]` (default: the package asset folder)."""
    out = argv[1] if len(argv) > 1 else ASSET_DIR
    build_default_tokenizer().save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv)
