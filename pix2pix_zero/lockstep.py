"""`editing.edit`'s lockstep loop with the no-grad UNet calls of neighbouring steps in one batch.

The reference's forward at step j+1 does not depend on the edits' step j: its latent is the reference's own
DDIM step (or, with Direct Inversion, the recorded level), known before step j's edits are guided. So the
edits' classifier-free-guidance forward of step j and the reference's forward of step j+1 ride in one UNet
call with per-row timesteps: a CPU runs one call of 2R rows faster than two calls of R rows (bench/speed.py).
Each row computes the same function as in `editing.edit` (the paper setting) or `diffusers_compat.edit`; the
results agree to float reassociation in the batched kernels (tests/test_lockstep.py).
"""
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .config import EditConfig
from .editing import check_inversion_path, follow_inversion_path, xa_guidance
from .finite import FiniteChecks
from .models.attention import record_cross_attention
from .models.ddim import alphas_cumprod, ddim_step, sampling_schedule
from .models.sd import StableDiffusion


@dataclass
class Rows:
    """The rows one prediction adds to a shared UNet call: x and context (R, ...) at one timestep t; with
    `guided`, R = 2B rows [c_neg half; c half] whose outputs combine by classifier-free guidance."""
    x: torch.Tensor
    c: torch.Tensor
    t: int
    guided: bool


def prediction_rows(x_neg: torch.Tensor, x_c: torch.Tensor, c: torch.Tensor, c_neg: torch.Tensor, t: int,
                    guided: bool) -> Rows:
    """`editing.guided_output`'s call as rows: [x_neg; x_c] with [c_neg; c], or x_c with c alone."""
    if not guided:
        return Rows(x_c, c, t, False)
    return Rows(torch.cat([x_neg, x_c]), torch.cat([c_neg, c]), t, True)


@torch.no_grad()
def shared_call(sd: StableDiffusion, calls: list[Rows], w: float) -> tuple[list[torch.Tensor], list[dict]]:
    """One UNet call on all rows of `calls` (explicit cross-attention softmax, as both loops use), split back:
    each call's guided output out(c_neg) + w (out(c) - out(c_neg)) (arXiv:2207.12598) and its rows' maps."""
    sizes = [len(call.x) for call in calls]
    t = torch.cat([torch.full((n,), call.t, device=call.x.device) for n, call in zip(sizes, calls)])
    with record_cross_attention(sd.unet) as maps:
        out = sd.unet(torch.cat([call.x for call in calls]), t, torch.cat([call.c for call in calls]))
    outs, call_maps = [], []
    for i, (o, call) in enumerate(zip(out.split(sizes), calls)):
        if call.guided:
            out_neg, out_c = o.chunk(2)
            o = out_neg + w * (out_c - out_neg)
        outs.append(o)
        start = sum(sizes[:i])
        call_maps.append({name: M[start:start + sizes[i]] for name, M in maps.items()})
    return outs, call_maps


def edit(sd: StableDiffusion, x_inv: torch.Tensor, c: torch.Tensor, delta_cs: list[torch.Tensor],
         c_neg: torch.Tensor, config: EditConfig, progress: bool = True, on_reference=None,
         x_path: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`editing.edit` (config.setting "paper") or `diffusers_compat.edit` ("diffusers"), same arguments and
    result, with the edits' guided forward of step j and the reference's forward of step j+1 in one call."""
    paper, w, B = config.setting == "paper", config.guidance_scale, x_inv.shape[0]
    c, c_neg = c.expand(B, -1, -1), c_neg.expand(B, -1, -1)
    c_edits = [c + delta_c.to(c) for delta_c in delta_cs]
    schedule = sampling_schedule(config.num_steps, alphas_cumprod())
    check_inversion_path(x_path, x_inv, len(schedule))
    # the paper setting makes one unguided call where guidance changes nothing (editing.guided_output);
    # decided once, here, not at every step
    ref_guided = not paper or not (w == 1 or torch.equal(c_neg, c))
    edit_guided = [not paper or not (w == 1 or torch.equal(c_neg, c_edit)) for c_edit in c_edits]

    def reference_rows(x_ref: torch.Tensor, t: int) -> Rows:
        return prediction_rows(x_ref, x_ref, c, c_neg, t, ref_guided)

    def reference_maps(maps: dict) -> dict:  # paper: the c rows; diffusers: both halves (diffusers_compat)
        return {name: M[-B:] for name, M in maps.items()} if paper else maps

    check_finite = FiniteChecks(x_inv.device)  # on a GPU, no wait for the host in the loop
    x_ref, x_edits = x_inv, [x_inv] * len(delta_cs)
    (out_ref,), (maps,) = shared_call(sd, [reference_rows(x_ref, schedule[0][0])], w)
    for j, (t, alpha_bar_t, alpha_bar_prev) in enumerate(tqdm(schedule, desc="editing", disable=not progress,
                                                              leave=False)):
        where = f"editing step {j + 1}/{len(schedule)} (t={t})"
        maps_ref = reference_maps(maps)
        x_next = check_finite(ddim_step(out_ref, x_ref, alpha_bar_t, alpha_bar_prev, sd.prediction_type),
                              "the reference latent", where)
        if on_reference is not None:
            on_reference(t, maps_ref)
        calls, x_continue = [], []
        for x, c_edit, guided in zip(x_edits, c_edits, edit_guided):
            if paper:  # editing.edit_step: guide the one latent, predict from it
                x_g = xa_guidance(sd, x, t, c_edit, maps_ref, config.lambda_xa * B)
                calls.append(prediction_rows(x_g, x_g, c_edit, c_neg, t, guided))
                x_continue.append(x_g)
            else:  # diffusers_compat.edit_step: guide both halves, continue from the unconditional one
                x_in = xa_guidance(sd, torch.cat([x, x]), t, torch.cat([c_neg, c_edit]), maps_ref, config.lambda_xa)
                calls.append(Rows(x_in, torch.cat([c_neg, c_edit]), t, True))
                x_continue.append(x_in.chunk(2)[0])
        x_ref_next = x_next if x_path is None else x_path[-2 - j].to(x_next)  # Direct Inversion holds it there
        last = j == len(schedule) - 1
        outs, call_maps = shared_call(sd, calls + ([] if last else [reference_rows(x_ref_next, schedule[j + 1][0])]),
                                      w)
        x_edits = [check_finite(ddim_step(out, x, alpha_bar_t, alpha_bar_prev, sd.prediction_type),
                                f"the latent of edit {k + 1}", where)
                   for k, (out, x) in enumerate(zip(outs, x_continue))]
        if x_path is not None:
            x_next, x_edits = follow_inversion_path(x_path[-2 - j].to(x_next), x_next, x_edits)
        if not last:
            out_ref, maps = outs[-1], call_maps[-1]
        x_ref = x_next
    check_finite.raise_first()
    return x_ref, x_edits
