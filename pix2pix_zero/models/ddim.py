"""Deterministic DDIM sampling and inversion for Stable Diffusion, as pure functions.

DDIM: Song et al., arXiv:2010.02502, eq. 12 with sigma_t = 0 (sampling) and eq. 13, the ODE form, run
backwards (inversion, sec. 4.3). v-prediction: Salimans & Ho, arXiv:2202.00512, sec. 4.
Schedule: SD's "scaled_linear" betas, 1000 training steps, "leading" timesteps with steps_offset = 1, and
alpha_bar[0] (not 1) as the last level (diffusers' set_alpha_to_one=False). alpha_bar is alphas_cumprod;
sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps is the noisy latent x_t, any shape, e.g. (B, 4, H/8, W/8).
"""
import torch

PREDICTION_TYPES = ("epsilon", "v_prediction")  # SD 1.x and SD 2 base predict eps; SD 2 768-v predicts v


def alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                   beta_end: float = 0.012) -> torch.Tensor:
    """alpha_bar[t] = prod_{s<=t} (1 - beta_s) for SD's scaled_linear betas, float32 of shape (T,).

    beta_s is the square of a linear ramp from sqrt(beta_start) to sqrt(beta_end). Computed in float32 with
    the same operations as diffusers, so the values are bit-identical to its schedulers' `alphas_cumprod`.
    """
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000, steps_offset: int = 1) -> torch.Tensor:
    """The N timesteps the UNet sees while sampling, descending ("leading" spacing): i * (T // N) + offset.

    N = 10 -> [901, 801, ..., 101, 1]; N = 50 -> [981, 961, ..., 21, 1].
    """
    assert 1 <= num_steps <= num_train_timesteps
    step_ratio = num_train_timesteps // num_steps
    return (torch.arange(num_steps) * step_ratio + steps_offset).flip(0)


def sampling_schedule(num_steps: int, alpha_bar: torch.Tensor,
                      steps_offset: int = 1) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(t, alpha_bar_t, alpha_bar_prev) for each DDIM sampling step, in order; alpha_bar from `alphas_cumprod`.

    Step i evaluates the UNet at x_t and timestep t, then moves x_t from noise level alpha_bar_t to
    alpha_bar_prev = alpha_bar[t - T // N], or alpha_bar[0] for the last step (set_alpha_to_one=False), as
    diffusers' DDIMScheduler does. For N = 10 (T // N = 100):

        step i          0     1     2     3     4     5     6     7     8     9
        UNet t          901   801   701   601   501   401   301   201   101   1
        alpha_bar_t     [901] [801] [701] [601] [501] [401] [301] [201] [101] [1]
        alpha_bar_prev  [801] [701] [601] [501] [401] [301] [201] [101] [1]   [0]

    A sample starts at level alpha_bar[901] and ends at alpha_bar[0] = 1 - beta_0, not exactly x_0.
    Usage: `for t, alpha_bar_t, alpha_bar_prev in sampling_schedule(...): x = ddim_step(unet(x, t), x, ...)`.
    """
    step_ratio = alpha_bar.shape[0] // num_steps
    schedule = []
    for t in ddim_timesteps(num_steps, alpha_bar.shape[0], steps_offset).tolist():
        t_prev = t - step_ratio
        schedule.append((t, alpha_bar[t], alpha_bar[t_prev] if t_prev >= 0 else alpha_bar[0]))
    return schedule


def inversion_schedule(num_steps: int, alpha_bar: torch.Tensor,
                       steps_offset: int = 1) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(t, alpha_bar_t, alpha_bar_prev) for each DDIM inversion step: the sampling schedule in reverse order.

    Step j evaluates the UNet at x_prev and timestep t, then moves x_prev from alpha_bar_prev up to
    alpha_bar_t with `ddim_inverse_step`, exactly undoing sampling step N-1-j. For N = 10:

        step j          0     1     2     3     4     5     6     7     8     9
        UNet t          1     101   201   301   401   501   601   701   801   901
        alpha_bar_prev  [0]   [1]   [101] [201] [301] [401] [501] [601] [701] [801]   (from)
        alpha_bar_t     [1]   [101] [201] [301] [401] [501] [601] [701] [801] [901]   (to)

    The clean latent is taken to be at level alpha_bar[0]; the result lands on alpha_bar[901], where sampling
    starts. With SD settings this is also exactly diffusers' DDIMInverseScheduler: its timesteps are
    [1, 101, ..., 901], and `step(out, t, x)` goes from alpha_bar[t - T // N] (its initial_alpha_cumprod =
    alpha_bar[0] when t - T // N < 0) to alpha_bar[t], which it names alpha_prod_t_prev.
    """
    # NOTE(official): the authors' inversion (pix2pix-zero src/utils/ddim_inv.py + scheduler.py) differs:
    # it runs only timesteps.flip(0)[1:-1], i.e. N - 2 steps t = 1 + r, ..., 1 + (N-2) r with r = T // N,
    # and reads alpha_bar[t - 1] -> alpha_bar[t - 1 + r] (N = 50: UNet t = 21..961, levels [20] -> [980]),
    # then edits with the ordinary sampling schedule from t = 981. We do not reproduce that schedule: both
    # settings invert with this exact reverse of sampling.
    return sampling_schedule(num_steps, alpha_bar, steps_offset)[::-1]


def eps_from_output(model_output: torch.Tensor, x_t: torch.Tensor, alpha_bar_t,
                    prediction_type: str = "epsilon") -> torch.Tensor:
    """The noise eps that a UNet output implies for x_t at level alpha_bar_t."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        # v = sqrt(a) eps - sqrt(1-a) x0 and x_t = sqrt(a) x0 + sqrt(1-a) eps  =>  eps = sqrt(a) v + sqrt(1-a) x_t
        return alpha_bar_t**0.5 * model_output + (1 - alpha_bar_t) ** 0.5 * x_t
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def x0_from_output(model_output: torch.Tensor, x_t: torch.Tensor, alpha_bar_t,
                   prediction_type: str = "epsilon") -> torch.Tensor:
    """The clean sample pred_x0 that a UNet output implies for x_t at level alpha_bar_t."""
    if prediction_type == "epsilon":
        # DDIM eq. 12, "predicted x0": (x_t - sqrt(1-a) eps) / sqrt(a)
        return (x_t - (1 - alpha_bar_t) ** 0.5 * model_output) / alpha_bar_t**0.5
    if prediction_type == "v_prediction":
        # x0 = sqrt(a) x_t - sqrt(1-a) v  (arXiv:2202.00512, sec. 4)
        return alpha_bar_t**0.5 * x_t - (1 - alpha_bar_t) ** 0.5 * model_output
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def v_from_eps_x0(eps: torch.Tensor, x0: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """The v-prediction target v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0 (arXiv:2202.00512, sec. 4)."""
    return alpha_bar_t**0.5 * eps - (1 - alpha_bar_t) ** 0.5 * x0


def ddim_step(model_output: torch.Tensor, x_t: torch.Tensor, alpha_bar_t, alpha_bar_prev,
              prediction_type: str = "epsilon") -> torch.Tensor:
    """Implements deterministic DDIM sampling, eq. 12 of Song et al. (2020) with sigma_t = 0 (eta = 0).

    x_prev = sqrt(alpha_bar_prev) pred_x0 + sqrt(1 - alpha_bar_prev) eps, where model_output = UNet(x_t, t)
    is converted at (x_t, alpha_bar_t). Matches diffusers' DDIMScheduler.step(...).prev_sample.
    """
    eps = eps_from_output(model_output, x_t, alpha_bar_t, prediction_type)
    pred_x0 = x0_from_output(model_output, x_t, alpha_bar_t, prediction_type)
    return alpha_bar_prev**0.5 * pred_x0 + (1 - alpha_bar_prev) ** 0.5 * eps  # DDIM eq. 12, sigma_t = 0


def ddim_inverse_step(model_output: torch.Tensor, x_prev: torch.Tensor, alpha_bar_t, alpha_bar_prev,
                      prediction_type: str = "epsilon") -> torch.Tensor:
    """Implements DDIM inversion: eq. 13 of Song et al. (2020), the probability-flow ODE, stepped backwards.

    x_t / sqrt(alpha_bar_t) = x_prev / sqrt(alpha_bar_prev) + (sqrt(1/alpha_bar_t - 1) - sqrt(1/alpha_bar_prev
    - 1)) eps, written as x_t = sqrt(alpha_bar_t) pred_x0 + sqrt(1 - alpha_bar_t) eps with pred_x0 taken at
    (x_prev, alpha_bar_prev). Same alpha argument order as `ddim_step`, so with the same eps
    ddim_step(eps, ddim_inverse_step(eps, x, a_t, a_prev), a_t, a_prev) == x. The UNet output is computed
    at x_prev and the timestep t of `inversion_schedule` (eps(x_prev) stands in for the unknown eps(x_t)).
    For v-prediction the output is converted at (x_prev, alpha_bar_prev), the level of the sample the UNet
    saw, as diffusers' DDIMInverseScheduler does, although the UNet was told timestep t (level alpha_bar_t).
    """
    eps = eps_from_output(model_output, x_prev, alpha_bar_prev, prediction_type)
    pred_x0 = x0_from_output(model_output, x_prev, alpha_bar_prev, prediction_type)
    return alpha_bar_t**0.5 * pred_x0 + (1 - alpha_bar_t) ** 0.5 * eps  # DDIM eq. 13 reversed, times sqrt(a_t)
