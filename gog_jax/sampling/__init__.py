"""JAX-native sampling engine: slot KV cache, prefill/append/decode, forks, continuous refill."""

from gog_jax.sampling.engine import Engine, EngineError, GenerationOutput, Session
from gog_jax.sampling.params import SamplingParams

__all__ = ["Engine", "EngineError", "GenerationOutput", "SamplingParams", "Session"]
