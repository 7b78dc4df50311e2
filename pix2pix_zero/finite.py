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
        fix = "float16 overflows in the VAE: run it with --vae-dtype fp32 (the default) or bf16"
    elif x.dtype == torch.float16:
        fix = "float16 overflows here: run with --dtype bf16 or --dtype fp32"
    else:
        fix = ("the model produced it in " + str(x.dtype).removeprefix("torch.") + "; check the checkpoint, "
               "or lower --xa-guidance, --guidance-scale, --lambda-ac or --lambda-kl")
    raise NonFiniteError(f"{where}: {what} has {bad} NaN/inf values of {x.numel()} ({fix})")
