"""Noise regularization of DDIM inversion: push each predicted noise map eps towards i.i.d. N(0, 1).

pix2pix-zero (Parmar et al., arXiv:2302.03027), sec. 3.2: L_pair, squared autocorrelation coefficients over a
pyramid of the noise map (after StyleGAN2's noise regularizer, arXiv:1912.04958, sec. 4), and L_KL, then a
few gradient steps on eps at every inversion step. Acts on eps of shape (B, C, h, w); for a v-prediction model
the caller converts v to eps first. Two settings: "paper" (this file's top half; per sample) and "diffusers"
(the bottom half: diffusers 0.42.1 `StableDiffusionPix2PixZeroPipeline`, draw for draw).
"""
import torch
import torch.nn.functional as F

SETTINGS = ("paper", "diffusers")


def noise_pyramid(eps: torch.Tensor, setting: str = "paper") -> list[torch.Tensor]:
    """Levels eta^0 = eps, eta^{p+1} = 2 * avgpool_2x2(eta^p); the factor 2 keeps white noise at unit variance.

    paper: pool again while both sides are larger than 8 (the paper's rule: 64 -> 32 -> 16 -> 8) and even, so
    every level is an exact 2x2 partition of the one above: 96 -> 48 -> 24 -> 12 -> 6, 72 -> 36 -> 18 -> 9,
    50 -> 25, 24 x 40 -> 12 x 20 -> 6 x 10. An odd side stops the pyramid (pooling it would drop a row).
    """
    assert setting in SETTINGS, setting
    levels = [eps]
    while True:
        h, w = levels[-1].shape[-2:]
        if setting == "paper" and (h % 2 or w % 2 or min(h, w) <= 8):
            break
        # NOTE(official): the authors (and diffusers) pool while the height is > 8, flooring odd sides and
        # ignoring the width, and without the factor 2, so level p of white noise has variance 4^-p.
        if setting == "diffusers" and h <= 8:
            break
        eta = F.avg_pool2d(levels[-1], kernel_size=2)
        levels.append(2 * eta if setting == "paper" else eta)
    return levels


def autocorrelation(eta: torch.Tensor, delta: int, dim: int) -> torch.Tensor:
    """rho(delta) = (1/(h w)) sum_{x,y} eta_{x,y} eta_{x-delta,y} along `dim`, circular; (..., h, w) -> (...).

    Not divided by the variance (as in the paper and the authors' code): for unit-variance maps it is the
    correlation coefficient. rho(delta) = rho(S - delta) for a side S, since rolling is circular.
    """
    return (eta * torch.roll(eta, shifts=delta, dims=dim)).mean(dim=(-2, -1))


def pair_loss_exact(eps: torch.Tensor) -> torch.Tensor:
    """L_pair (paper sec. 3.2) per sample, (B, C, h, w) -> (B,): over levels p, channels and both axes, the
    squared autocorrelation coefficients rho(delta)^2 for every shift delta = 1..S_p-1 (S_p the side along
    that axis), each level's sum divided by its map size S_p^2 = h_p * w_p ("normalized by the noise map size").

    For white noise each rho(delta)^2 is about 1 / S_p^2, so a level contributes about 2 C / S_p^3: coarse levels
    weigh more. The random estimator below keeps the authors' scale, for which lambda_ac = 20 is tuned.
    """
    loss = eps.new_zeros(eps.shape[0])
    for eta in noise_pyramid(eps):
        size = eta.shape[-2] * eta.shape[-1]
        for dim in (-2, -1):
            for delta in range(1, eta.shape[dim]):
                loss = loss + autocorrelation(eta, delta, dim).pow(2).sum(dim=1) / size
    return loss


def pair_loss(eps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random-shift estimator of L_pair used in the procedure, (B, C, h, w) -> (B,); sides must be >= 3.

    At each level p and for each channel it draws one shift per axis, delta ~ U{1, ..., K_p}, K_p = ceil(S_p/2)-1
    (the shifts in [1, S_p/2)), the same for every sample, and sums rho(delta)^2. By the symmetry of rho, for
    each level, channel and axis:
        sum_{delta=1}^{S_p-1} rho(delta)^2 = 2 K_p E[rho(delta)^2] + [S_p even] rho(S_p/2)^2,
    i.e. pair_loss_exact = sum_p (2 K_p E[term_p] + Nyquist term_p) / (h_p w_p). Draw order: for each level, for each axis
    (h then w), one torch.randint of C shifts from `generator`; nothing depends on B, so a sample's draws are
    the same alone or in a batch.
    """
    loss = eps.new_zeros(eps.shape[0])
    for eta in noise_pyramid(eps):
        for dim in (-2, -1):
            K = (eta.shape[dim] + 1) // 2 - 1
            delta = torch.randint(1, K + 1, (eta.shape[1],), generator=generator, device=generator.device)
            for c in range(eta.shape[1]):
                loss = loss + autocorrelation(eta[:, c], int(delta[c]), dim).pow(2)
    # NOTE(official): the authors draw randrange(S_p // 2), which includes delta = 0, where rho(0)^2 is the
    # squared second moment: it pulls the variance to 0, against L_KL. We never draw 0.
    return loss


def kl_loss(eps: torch.Tensor) -> torch.Tensor:
    """L_KL (paper sec. 3.2) = var + mean^2 - 1 - log(var + 1e-7) of each sample's map, (B, C, h, w) -> (B,).

    var is the unbiased variance (torch.var's default, as the authors and diffusers); L_KL = -log(1 + 1e-7)
    ~ 0 at mean 0 and unbiased variance 1. This is twice KL(N(mean, var) || N(0, 1)), plus the 1e-7.
    """
    mean, var = eps.mean(dim=(1, 2, 3)), eps.var(dim=(1, 2, 3))
    return var + mean**2 - 1 - torch.log(var + 1e-7)


def regularize_eps(eps: torch.Tensor, generator: torch.Generator, lambda_ac: float = 20.0,
                   lambda_kl: float = 20.0, num_reg_steps: int = 5, num_ac_rolls: int = 5,
                   setting: str = "paper") -> torch.Tensor:
    """Gradient steps on eps (the authors' ddim_inv.py and diffusers' `invert`); returns a new tensor, no graph.

    repeat num_reg_steps times:
        repeat num_ac_rolls times: eps <- eps - lambda_ac * grad L_pair(eps) / num_ac_rolls  (fresh shifts each)
        eps <- eps - lambda_kl * grad L_KL(eps)
    A term with lambda 0 is skipped and draws nothing. Defaults are the authors' (lambda_ac = lambda_kl = 20,
    5 x 5). "paper" sums the per-sample losses, so each sample moves as it would alone; "diffusers" uses
    diffusers' batch-pooled losses below. Works inside torch.no_grad() and torch.inference_mode().
    """
    L_pair, L_KL = {"paper": (pair_loss, kl_loss),
                    "diffusers": (pair_loss_diffusers, kl_loss_diffusers)}[setting]

    def grad(loss_fn, eps):
        eps = eps.detach().requires_grad_(True)
        return torch.autograd.grad(loss_fn(eps).sum(), eps)[0]

    with torch.inference_mode(False), torch.enable_grad():
        eps = eps.clone()  # a normal tensor even when the caller's is an inference tensor
        for _ in range(num_reg_steps):
            if lambda_ac > 0:
                for _ in range(num_ac_rolls):
                    eps = eps - lambda_ac * grad(lambda e: L_pair(e, generator), eps) / num_ac_rolls
            if lambda_kl > 0:
                eps = eps - lambda_kl * grad(L_KL, eps)
    return eps.detach()


# --- "diffusers" setting: diffusers 0.42.1 `auto_corr_loss` and `kl_divergence`, the authors' code batched ---

def pair_loss_diffusers(eps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """diffusers' `auto_corr_loss`, a scalar for the whole batch.

    Draw order, to match it: for sample i, for channel j, for level p (its pyramid rule above), one
    torch.randint(S_p // 2, (1,)) with S_p the level's height; the same delta serves both axes.
    """
    # NOTE(official): delta is in [0, S_p/2), 0 included (see pair_loss); the width's shift range follows
    # the height. Each (sample, channel) pair draws in turn, so a sample's shifts depend on its batch index.
    loss = eps.new_zeros(())
    for i in range(eps.shape[0]):
        for j in range(eps.shape[1]):
            for eta in noise_pyramid(eps[i, j][None], setting="diffusers"):  # (1, h_p, w_p)
                delta = int(torch.randint(eta.shape[-2] // 2, (1,), generator=generator, device=generator.device))
                loss = loss + autocorrelation(eta, delta, -2)[0] ** 2 + autocorrelation(eta, delta, -1)[0] ** 2
    return loss


def kl_loss_diffusers(eps: torch.Tensor) -> torch.Tensor:
    """diffusers' `kl_divergence`: L_KL with one mean and one (unbiased) variance over the whole batch."""
    # NOTE(official): the authors' code asserts batch size 1; diffusers' pooling couples the samples of a batch.
    mean, var = eps.mean(), eps.var()
    return var + mean**2 - 1 - torch.log(var + 1e-7)
