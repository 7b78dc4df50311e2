"""EditConfig: every hyperparameter of pix2pix-zero in one place, with where each default comes from.

"paper" follows the mathematics of Parmar et al. (arXiv:2302.03027); "diffusers" follows diffusers'
StableDiffusionPix2PixZeroPipeline (0.42.1) step for step, quirks included (diffusers_compat.py). The README
has a table of what each setting changes. The command line (cli.py, via tools/arguments.config_args) makes one
flag of each field, its help the field's comment.
"""
from dataclasses import asdict, dataclass
from typing import Literal

SETTINGS = ("paper", "diffusers")
POSTERIORS = ("mean", "sample")
INVERSION_METHODS = ("ddim", "direct", "fixed-point")
PAIR_SHIFTS = ("random", "all")


@dataclass
class EditConfig:
    setting: Literal["paper", "diffusers"] = "paper"  # the paper's mathematics, or diffusers' pipeline step for step
    num_steps: int = 50  # DDIM steps for inversion and editing (authors' CLI default; the paper used 100)
    guidance_scale: float = 5.0  # classifier-free guidance w while editing (authors' CLI default)
    lambda_xa: float = 0.1  # cross-attention guidance step size (paper sec. 3.3; authors' CLI --xa_guidance)
    lambda_ac: float = 20.0  # autocorrelation regularizer step size (paper sec. 3.1; authors' code)
    lambda_kl: float = 20.0  # KL regularizer step size (authors' code)
    num_reg_steps: int = 5  # regularizer iterations per inversion step (authors' code)
    num_ac_rolls: int = 5  # random-shift draws per regularizer iteration (authors' code)
    pair_shifts: Literal["random", "all"] = "random"  # L_pair at random shifts (paper), or its exact mean over all shifts by FFT
    posterior: Literal["mean", "sample", None] = None  # VAE encoding x0: posterior mean or sample (default: the setting's: paper mean, diffusers sample)
    inversion_method: Literal["ddim", "direct", "fixed-point"] = "ddim"  # ddim (paper), direct or fixed-point (README)
    inversion_iters: int = 5  # fixed-point: UNet evaluations per inversion step (1 is plain DDIM)
    inversion_average: int = 1  # fixed-point: step with the mean eps of the last K evaluations (ReNoise)
    pyramid_rescale: bool = True  # x2 after each pyramid pooling (paper); off: unscaled (authors' code)
    edit_multiplier: float = 1.0  # c_edit = c + edit_multiplier * delta_c: the edit's strength (authors' demo)
    seed: int = 0  # seeds every torch.Generator of a run (regularizer shifts, posterior sample, synthetic x_T)

    def __post_init__(self):
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, not {self.setting!r}")
        if self.posterior not in (*POSTERIORS, None):
            raise ValueError(f"posterior must be one of {POSTERIORS} or None, not {self.posterior!r}")
        if not 1 <= self.num_steps <= 1000:
            raise ValueError(f"num_steps (--num-steps/--steps) must be in 1..1000, not {self.num_steps}; the paper's "
                             "default is 50")
        for name in ("guidance_scale", "lambda_xa", "lambda_ac", "lambda_kl", "num_reg_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be >= 0, not {getattr(self, name)}; "
                                 f"its default is {getattr(type(self), name)}")
        if self.num_ac_rolls < 1:
            raise ValueError(f"num_ac_rolls (--num-ac-rolls) must be >= 1, not {self.num_ac_rolls} (turn the "
                             "regularizer off with --num-reg-steps 0)")
        if self.inversion_method not in INVERSION_METHODS:
            raise ValueError(f"inversion_method must be one of {INVERSION_METHODS}, not {self.inversion_method!r}")
        if not 1 <= self.inversion_average <= self.inversion_iters:
            raise ValueError(f"need 1 <= inversion_average <= inversion_iters, not {self.inversion_average} and "
                             f"{self.inversion_iters}")
        if self.setting == "diffusers" and self.inversion_method != "ddim":
            raise ValueError(f"inversion_method {self.inversion_method!r} is not part of the diffusers setting, which "
                             "reproduces diffusers' pipeline (DDIM inversion only): use --setting paper")
        if self.pair_shifts not in PAIR_SHIFTS:
            raise ValueError(f"pair_shifts must be one of {PAIR_SHIFTS}, not {self.pair_shifts!r}")
        if self.setting == "diffusers" and self.pair_shifts != "random":
            raise ValueError("pair_shifts 'all' applies to the paper setting; the diffusers setting draws random "
                             "shifts as diffusers' pipeline does")
        if self.setting == "diffusers" and not self.pyramid_rescale:
            raise ValueError("pyramid_rescale applies to the paper setting; the diffusers setting always uses "
                             "diffusers' unscaled pyramid")

    def to_dict(self) -> dict:
        return asdict(self)
