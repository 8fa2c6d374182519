"""Model backbones (Flax NNX)."""
