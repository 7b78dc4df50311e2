"""A NaN or inf anywhere in the method stops the image at the step where it first appears.

Without this check a NaN latent decodes to an all-black picture that looks like a result. The loops call
`check_finite` on every noise prediction and latent they make, and the decoder on every image, so the
message names the step (and the fix) instead of the symptom.
"""
import torch


class NonFiniteError(ValueError):
    """A tensor of the method holds NaN or inf; the message names where and what to do."""


def check_finite(x: torch.Tensor, what: str, where: str) -> torch.Tensor:
    """Return x unchanged, or raise NonFiniteError naming `what` (e.g. "eps") and `where` (e.g. a step)."""
    if bool(torch.isfinite(x).all()):
        return x
    bad = int((~torch.isfinite(x)).sum())
    if x.dtype == torch.float16 and where.startswith("VAE"):
        fix = ("float16 overflows in the VAE: run it with --vae-dtype fp32 (the default) or bf16 (SDXL's "
               "VAE overflows float16 where SD's does not; a fp16-safe one is madebyollin/sdxl-vae-fp16-fix)")
    elif x.dtype == torch.float16:
        fix = "float16 overflows here: run with --dtype bf16 or --dtype fp32"
    else:
        fix = ("the model produced it in " + str(x.dtype).removeprefix("torch.") + "; check the checkpoint, "
               "or lower --xa-guidance, --guidance-scale, --lambda-ac or --lambda-kl")
    raise NonFiniteError(f"{where}: {what} has {bad} NaN/inf values of {x.numel()} ({fix})")


class FiniteChecks:
    """`check_finite` for a loop without making the host wait for a GPU at every step.

    On the CPU each call checks at once (a CPU never waits for itself). On another device each call keeps a
    device-side flag, and `raise_first()`, after the loop, reads them all in one transfer and raises
    `check_finite`'s error for the first non-finite tensor, naming its step as an immediate check would; the
    steps after it ran on NaN in vain, which costs time, never a wrong result.
    """

    def __init__(self, device: torch.device | str):
        self.deferred = torch.device(device).type != "cpu"
        self.pending: list[tuple[torch.Tensor, torch.Tensor, str, str]] = []

    def __call__(self, x: torch.Tensor, what: str, where: str) -> torch.Tensor:
        if not self.deferred:
            return check_finite(x, what, where)
        self.pending.append((torch.isfinite(x).all(), x, what, where))
        return x

    def raise_first(self) -> None:
        pending, self.pending = self.pending, []
        if pending:
            flags = torch.stack([flag for flag, *_ in pending]).cpu()  # the one wait
            for ok, (_, x, what, where) in zip(flags.tolist(), pending):
                if not ok:
                    check_finite(x, what, where)
