"""Images: the resize policy, [-1, 1] conversions, clear errors, PNG writes."""
import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_zero.tools.image import fit_size, load_image, pil_to_tensor, save_png, tensor_to_pil


def test_resize_policy_keeps_aspect_and_rounds_to_multiples_of_64():
    assert fit_size(512, 512, 512) == (512, 512)
    assert fit_size(1024, 768, 512) == (512, 384)
    assert fit_size(100, 80, 128) == (128, 128)  # 128 x 102.4 -> 102.4 rounds to 128
    assert fit_size(3000, 100, 512) == (512, 64)  # never below 64


def test_pixels_map_to_minus_one_one_and_back_exactly():
    im = Image.fromarray(torch.arange(0, 256, dtype=torch.uint8).reshape(16, 16)[..., None].expand(16, 16, 3).numpy())
    x = pil_to_tensor(im)
    assert x.shape == (1, 3, 16, 16) and x.min() == -1 and x.max() == 1
    assert (np.asarray(tensor_to_pil(x)) == np.asarray(im)).all()


def test_bad_image_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        load_image(bad)


def test_save_png_round_trips_pixels(tmp_path):
    """(Atomicity: tests/test_files.py.)"""
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    path = save_png(im, tmp_path / "sub" / "out.png")
    assert (np.asarray(Image.open(path)) == np.asarray(im)).all()


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored 120 x 60 with Orientation = 6 (rotate 90 degrees) is shown, and edited, as 60 x 120."""
    im = Image.new("RGB", (120, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "phone.jpg", exif=exif)
    x = load_image(tmp_path / "phone.jpg", size=128)
    assert x.shape[-2:] == (128, 64)  # (H, W): portrait
