"""LPIPS (Zhang et al., CVPR 2018, arXiv:1801.03924), optional: neither package is a dependency of pix2pix_zero,
and CI has neither, so LPIPS columns appear only where one is installed.

  `lpips` package, AlexNet (as the pix2pix-zero paper): pip install lpips
  torchmetrics' LearnedPerceptualImagePatchSimilarity, SqueezeNet (as PIE-Bench): pip install torchmetrics torchvision
Both fetch their backbone weights on first use (torchvision's cache); offline, put them there first.
Masked LPIPS follows metrics.py's `pie` mode (both images times the unedited mask; PIE-Bench's); LPIPS has no
`exact` mode (a network sees whole windows): with `--mask-mode exact` it is still taken in `pie` mode.
"""
import torch

from .metrics import zero_edited

NETS = {"lpips": "alex", "torchmetrics": "squeeze"}


class Lpips:
    """Call with two (3, H, W) images in [0, 1] -> the LPIPS distance."""

    def __init__(self, package: str, net, device):
        self.package, self.net, self.device = package, net, torch.device(device)
        self.name = f"{package} ({NETS[package]})"

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = (x[None].float().to(self.device) * 2 - 1 for x in (a, b))  # LPIPS reads [-1, 1]
        return float(self.net(a, b).mean())

    def masked(self, a: torch.Tensor, b: torch.Tensor, edited: torch.Tensor, mode: str = "pie") -> float:
        return self(*zero_edited(a, b, edited))


def load_lpips(choice: str = "auto", device="cpu") -> tuple[Lpips | None, str]:
    """(a scorer, "") or (None, why not). choice: auto (lpips, else torchmetrics), lpips, torchmetrics, off."""
    if choice == "off":
        return None, "LPIPS off (--lpips off)"
    problems = []
    for package in (["lpips", "torchmetrics"] if choice == "auto" else [choice]):
        try:
            if package == "lpips":
                import lpips
                net = lpips.LPIPS(net="alex", verbose=False)
            else:
                from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
                net = LearnedPerceptualImagePatchSimilarity(net_type="squeeze")
            return Lpips(package, net.to(device).eval(), device), ""
        except (ImportError, ModuleNotFoundError) as e:
            problems.append(f"{package}: unavailable ({e})")
        except (OSError, RuntimeError) as e:
            problems.append(f"{package}: its backbone weights did not load ({e}); offline, put them in "
                            "torchvision's cache (~/.cache/torch/hub/checkpoints) first")
    return None, ("no LPIPS: " + "; ".join(problems) + ". LPIPS is optional: pip install lpips (AlexNet, "
                  "the paper's) or torchmetrics torchvision (SqueezeNet, PIE-Bench's)")
