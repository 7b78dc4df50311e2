"""The NaN guard: a non-finite eps, latent or image stops the image at the step where it appears, names the
step and the fix, and leaves no output behind (so a later run redoes the image)."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pix2pix_zero.tools.batch import Job, run
from pix2pix_zero.config import EditConfig
from pix2pix_zero.editing import edit
from pix2pix_zero.finite import FiniteChecks, NonFiniteError, check_finite
from pix2pix_zero.inversion import invert


class NaNAtCall(nn.Module):
    """The UNet, except that its output at call number `at` (1-based) holds one NaN: a crafted eps."""

    def __init__(self, unet, at: int):
        super().__init__()
        self.unet, self.at, self.calls = unet, at, 0

    def forward(self, x, t, c):
        self.calls += 1
        out = self.unet(x, t, c)
        if self.calls == self.at:
            out = out.clone()
            out[0, 0, 0, 0] = float("nan")
        return out

    def __getattr__(self, name):  # conv_in, parameters, ... of the wrapped UNet
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.unet, name)


def test_check_finite_passes_finite_tensors_and_names_step_and_fix():
    x = torch.ones(2, 3)
    assert check_finite(x, "eps", "step 1") is x
    x[1, 2] = float("inf")
    with pytest.raises(NonFiniteError, match=r"inversion step 4/50 \(t=61\): eps has 1 NaN/inf values of 6"):
        check_finite(x, "eps", "inversion step 4/50 (t=61)")
    with pytest.raises(NonFiniteError, match="--dtype bf16"):
        check_finite(x.half(), "eps", "step 1")


def test_a_crafted_nan_eps_stops_inversion_at_its_step(sd):
    x0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    c = sd.encode_text(["a photo of a cat"])
    bad = dataclasses.replace(sd, unet=NaNAtCall(sd.unet, at=2))
    with pytest.raises(NonFiniteError, match=r"inversion step 2/3 \(t=\d+\): eps has 1 NaN"):
        invert(bad, x0, c, EditConfig(num_steps=3), torch.Generator(), progress=False)


def test_a_crafted_nan_stops_editing_at_its_step(sd):
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    c = sd.encode_text(["a photo of a cat"])
    bad = dataclasses.replace(sd, unet=NaNAtCall(sd.unet, at=1))  # the reference's first prediction
    with pytest.raises(NonFiniteError, match=r"editing step 1/2 \(t=\d+\): the reference latent"):
        edit(bad, x, c, [torch.zeros_like(c)], c, EditConfig(num_steps=2), progress=False)


def test_a_failed_image_writes_nothing_and_is_redone_by_the_next_run(sd, tmp_path):
    photo = tmp_path / "cat.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(photo)
    job = Job("cat", ["dog"], prompt="a photo of a cat", size=64, cache_dir=str(tmp_path / "cache"))
    config = EditConfig(num_steps=2, num_reg_steps=1, num_ac_rolls=1)
    out = tmp_path / "out"
    # UNet calls: inversion (2), then editing step 1: the reference (3), the edit's guidance (4) and its
    # classifier-free-guided prediction (5), whose NaN reaches the edit's latent
    bad = dataclasses.replace(sd, unet=NaNAtCall(sd.unet, at=5))
    with pytest.raises(NonFiniteError, match="editing step 1/2 .*: the latent of edit 1"):
        run(bad, job, config, out, image_path=photo, progress=False)
    assert not out.exists() or not any(out.iterdir())  # not even the (finite) inversion
    written = run(sd, job, config, out, image_path=photo, progress=False)
    assert {p.name for p in written} >= {"cat-cat2dog.png", "cat-cat2dog.json", "cat-inversion.safetensors"}


def test_deferred_checks_raise_the_first_failure_after_the_loop():
    """FiniteChecks as on a GPU (deferred): nothing raises during the loop; raise_first names the first bad step."""
    checks = FiniteChecks("cpu")
    checks.deferred = True  # what a CUDA device gets; the logic is the same on any device
    bad = torch.ones(3)
    bad[0] = float("nan")
    fine = torch.ones(3)
    assert checks(fine, "eps", "step 1") is fine  # passed through, not copied
    checks(bad, "eps", "step 2")
    checks(bad * 2, "the latent", "step 3")
    with pytest.raises(NonFiniteError, match=r"step 2: eps has 1 NaN"):
        checks.raise_first()
    checks.raise_first()  # cleared: nothing pending
    assert not FiniteChecks("cpu").deferred  # a CPU checks at once


def test_the_editing_loop_reads_the_device_once_whatever_its_length(sd, monkeypatch):
    """The CPU counterpart of the CUDA sync test: with the checks deferred as on a GPU, count the loop's reads
    of tensor values to the host (bool(), item(), tolist(), .cpu()). A loop that checked at every step would read
    more with 4 steps than with 2; the deferred loop reads the same number (the one at raise_first, plus any
    outside the steps)."""
    reads = []
    for name in ("__bool__", "item", "tolist", "cpu"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            reads.append(1)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    init = FiniteChecks.__init__
    monkeypatch.setattr(FiniteChecks, "__init__", lambda self, device: (init(self, device),
                                                                       setattr(self, "deferred", True))[0])
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    c = sd.encode_text(["a photo of a cat"])
    config = lambda n: EditConfig(num_steps=n, guidance_scale=1.0)  # noqa: E731  (no torch.equal on c_neg)

    def count(num_steps: int) -> int:
        reads.clear()
        edit(sd, x, c, [torch.zeros_like(c)], c, config(num_steps), progress=False)
        return len(reads)
    two, four = count(2), count(4)
    assert two == four >= 1
    bad = dataclasses.replace(sd, unet=NaNAtCall(sd.unet, at=1))
    with pytest.raises(NonFiniteError, match=r"editing step 1/2 \(t=\d+\): the reference latent"):
        edit(bad, x, c, [torch.zeros_like(c)], c, config(2), progress=False)  # deferred, still names the step
