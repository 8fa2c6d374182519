"""SFT: a run interrupted right after a checkpoint and resumed ends with the same weights and loss."""

import numpy as np
import pytest
from safetensors.numpy import load_file

from configs import sft as sft_config
from gog_jax.train import sft
from gog_jax.train.step import Learner


def test_resume_after_interruption_is_exact(tmp_path, monkeypatch):
    config = sft_config.get_config("smoke")
    config.sft.steps = 4
    config.checkpoint.update(sft_every=2, async_save=False)
    data = sft.prepare_data(config, str(tmp_path / "data"))
    straight = sft.train(config, str(tmp_path / "straight"), data)

    step = Learner.step
    calls = {"n": 0, "die_at": 3}  # the third step runs right after step 2's checkpoint

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["die_at"]:
            raise KeyboardInterrupt("pre-empted")
        return step(self, *args, **kwargs)
    monkeypatch.setattr(Learner, "step", counted)
    with pytest.raises(KeyboardInterrupt):
        sft.train(config, str(tmp_path / "resumed"), data)
    calls.update(n=0, die_at=0)
    resumed = sft.train(config, str(tmp_path / "resumed"), data)

    assert calls["n"] == 2  # steps 3 and 4 only: it resumed, not restarted
    assert resumed["final_nll"] == straight["final_nll"]
    want, got = (load_file(f"{s['export_dir']}/model.safetensors") for s in (straight, resumed))
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
