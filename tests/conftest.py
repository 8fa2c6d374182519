"""Suite-wide setup: 8 fake CPU devices (sharding tests), no network access for models, and the main
job's allocator settings."""

import os

# Must happen before jax is imported anywhere in the test process.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The main job's allocator settings (XLA:CPU steps then reuse their working memory); they have to
# precede the backend, which no import above starts.
from gog_jax import host_allocator  # noqa: E402  pylint: disable=wrong-import-position

host_allocator.configure()
