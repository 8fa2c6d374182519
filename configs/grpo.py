"""The main job's config.

GRPO training is not built yet (issue 5). Until it lands, the main job runs the foundation that
exists — the tiny preset's checkpoint round trip and jitted multimodal forward (configs/forward.py)
— and its summary says plainly that nothing was trained.
"""

from configs.forward import get_config  # noqa: F401  (re-exported for config_flags)
