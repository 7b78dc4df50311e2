"""Direct Inversion: an option beside the paper's editing loop (editing.py).

Ju et al., "PnP Inversion: Boosting Diffusion-based Editing with 3 Lines of Code", arXiv:2310.01506v1,
Algorithm 1. The reference trajectory of an inverted image drifts from the inversion's own path; after each
sampling step, Direct Inversion adds the gap between the inversion latent at that level and the reference
latent, so the reference sits on the path (its maps are the real image's, its end point is x0), and each edit
moves by the same gap. `--inversion-method direct`; options.py plugs `DirectInversion` into editing.edit as its
`after_step`. The path is inversion.invert_path's levels, (N + 1, B, 4, H, W) with [0] = x0, [-1] = x_inv.
"""
import torch


def follow_inversion_path(x_inv_prev: torch.Tensor, x_ref_prev: torch.Tensor, x_edits_prev: list[torch.Tensor]
                          ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Add d = x_inv_prev - x_ref_prev to every trajectory after a step: the reference lands on the inversion
    path exactly (returned as x_inv_prev itself), each edit latent moves by the same d."""
    # NOTE(official): for pix2pix-zero, PnP Inversion's runner (run_editing_pix2pix_zero.py, edit_pipeline.py)
    # adds the reference's gap to the edit trajectory as well, as here; its Prompt-to-Prompt and MasaCtrl runners
    # correct the source branch only (the target branch there is steered by injected attention instead).
    d = x_inv_prev - x_ref_prev
    return x_inv_prev, [x + d for x in x_edits_prev]


class DirectInversion:
    """editing.edit's `after_step`: after sampling step j (of N) both trajectories are corrected towards
    x_path[N - 1 - j], the level that step lands on."""

    def __init__(self, x_path: torch.Tensor, x_inv: torch.Tensor, num_steps: int):
        if len(x_path) != num_steps + 1 or not torch.equal(x_path[-1].to(x_inv), x_inv):
            raise ValueError(f"x_path must hold the {num_steps + 1} levels of an inversion with {num_steps} "
                             f"steps ending at x_inv, not {len(x_path)} levels")
        self.x_path = x_path

    def __call__(self, j: int, x_ref: torch.Tensor, x_edits: list[torch.Tensor]
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return follow_inversion_path(self.x_path[-2 - j].to(x_ref), x_ref, x_edits)
