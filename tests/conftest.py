"""Tiny seeded SD 1.x checkpoints, written once per test session: the original single file, a diffusers
folder, and a diffusers folder with the old VAE attention names. All three hold the same weights (seed 0)."""
import os

import pytest
import torch

from pix2pix_zero.loading.load import load_sd
from pix2pix_zero.loading.random_checkpoint import make_checkpoint


def pytest_configure(config):
    """Under pytest-xdist (`-n 2`) each worker computes on one thread: the workers share the cores instead of
    each starting a thread per core."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def single_file(checkpoints):
    return make_checkpoint(checkpoints / "tiny.safetensors", "single")


@pytest.fixture(scope="session")
def diffusers_folder(checkpoints):
    return make_checkpoint(checkpoints / "tiny-diffusers", "diffusers")


@pytest.fixture(scope="session")
def legacy_vae_folder(checkpoints):
    return make_checkpoint(checkpoints / "tiny-diffusers-legacy-vae", "diffusers", legacy_vae=True)


@pytest.fixture(scope="session")
def sd(diffusers_folder):
    """Our models from the diffusers folder, fp32 on the CPU (frozen, so tests may share them)."""
    return load_sd(diffusers_folder)


@pytest.fixture(scope="session")
def sd_single(single_file):
    return load_sd(single_file)


@pytest.fixture(scope="session")
def diffusers_pix2pix_zero():
    """A factory: diffusers' StableDiffusionPix2PixZeroPipeline assembled from a tiny diffusers folder."""
    from diffusers import (AutoencoderKL, DDIMInverseScheduler, DDIMScheduler, StableDiffusionPix2PixZeroPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextModel, CLIPTokenizer

    def build(folder):
        f = str(folder)
        pipe = StableDiffusionPix2PixZeroPipeline(
            vae=AutoencoderKL.from_pretrained(f, subfolder="vae"),
            text_encoder=CLIPTextModel.from_pretrained(f, subfolder="text_encoder"),
            tokenizer=CLIPTokenizer.from_pretrained(f, subfolder="tokenizer"),
            unet=UNet2DConditionModel.from_pretrained(f, subfolder="unet"),
            scheduler=DDIMScheduler.from_pretrained(f, subfolder="scheduler"),
            inverse_scheduler=DDIMInverseScheduler.from_pretrained(f, subfolder="scheduler"),
            feature_extractor=None, safety_checker=None, caption_generator=None, caption_processor=None,
            requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    return build


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory):
    """A random BLIP captioner folder in transformers' layout (tests/tiny_models.py)."""
    from tiny_models import make_tiny_blip
    return make_tiny_blip(tmp_path_factory.mktemp("blip") / "tiny-blip")


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory):
    """A random T5 language-model folder with a word-level tokenizer (tests/tiny_models.py)."""
    from tiny_models import make_tiny_t5
    return make_tiny_t5(tmp_path_factory.mktemp("t5") / "tiny-t5")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A random CLIP folder in transformers' layout (tests/tiny_models.py)."""
    from tiny_models import make_tiny_clip
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_dino(tmp_path_factory):
    """A random DINO-shaped ViT folder in transformers' layout (tests/tiny_models.py)."""
    from tiny_models import make_tiny_dino
    return make_tiny_dino(tmp_path_factory.mktemp("dino") / "tiny-dino")


@pytest.fixture
def command(capsys):
    """The command line's main(argv) (pix2pix_zero.cli) run in this process -> (exit status, stdout, stderr)."""
    from pix2pix_zero import cli

    def run(argv):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own usage errors
            code = e.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


@pytest.fixture
def one_thread():
    """One CPU thread for the test: torch's CPU backward (the guidance gradient, the regularizer) is not bitwise
    reproducible across thread counts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
