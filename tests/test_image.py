"""Images: the size policy by hand, every file kind and mode, bad files named, [-1, 1] conversions, PNG writes."""
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_zero.tools.image import (MAX_PIXELS, ImageError, load_image, pil_to_tensor, plan_geometry, read_image,
                                      save_png, tensor_to_pil)


def test_size_policy_by_hand():
    g = plan_geometry(512, 512, 512)
    assert g.size == (512, 512) and g.crop == (0, 0, 512, 512) and g.pad is None
    # shorter side 768 -> 512: scale 2/3, 1024 -> 682.67 -> 683; crop 683 to 640 around the centre: 21 | 640 | 22
    g = plan_geometry(1024, 768, 512)
    assert g.resized == (683, 512) and g.size == (640, 512) and g.crop == (21, 0, 661, 512)
    g = plan_geometry(1024, 768, 512, pad=True)  # 683 -> 704: 10 edge pixels left, 11 right
    assert g.size == (704, 512) and g.pad == (10, 0, 11, 0) and g.crop is None
    # 3000 x 100: shorter side to 512 would make the longer 15360 > 2 x 512, so the longer side is capped at 1024
    assert plan_geometry(3000, 100, 512, pad=True).resized == (1024, 34)
    assert plan_geometry(3000, 100, 512, pad=True).pad == (0, 15, 0, 15)
    with pytest.raises(ImageError, match="too thin.*--pad"):
        plan_geometry(3000, 100, 512)
    for bad in (0, -8, 100):
        with pytest.raises(ValueError, match="multiple of 8"):
            plan_geometry(64, 64, bad)


def test_aspect_ratio_is_kept_within_one_pixel_before_the_crop():
    for w, h in [(640, 480), (480, 640), (1000, 333), (77, 1200)]:
        g = plan_geometry(w, h, 256, pad=True)
        assert abs(g.resized[0] / g.resized[1] - w / h) < 1 / min(g.resized) * 2
        assert all(side % 64 == 0 for side in g.size) and max(g.resized) <= 512


def test_pad_repeats_the_edge_pixels(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 100, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    x, g = load_image(tmp_path / "wide.png", 64, pad=True)
    assert g.resized == (100, 64) and g.size == (128, 64) and g.pad == (14, 0, 14, 0)
    assert x.shape == (1, 3, 64, 128)
    assert torch.equal(x[..., :14], x[..., 14:15].expand(-1, -1, -1, 14))
    assert torch.equal(x[..., -14:], x[..., -15:-14].expand(-1, -1, -1, 14))


def test_pixels_map_to_minus_one_one_and_back_exactly():
    im = Image.fromarray(torch.arange(0, 256, dtype=torch.uint8).reshape(16, 16)[..., None].expand(16, 16, 3).numpy())
    x = pil_to_tensor(im)
    assert x.shape == (1, 3, 16, 16) and x.min() == -1 and x.max() == 1
    assert (np.asarray(tensor_to_pil(x)) == np.asarray(im)).all()


@pytest.mark.parametrize("fmt,suffix,options", [("PNG", ".png", {}), ("BMP", ".bmp", {}), ("TIFF", ".tif", {}),
                                                ("WEBP", ".webp", {"lossless": True})])
def test_lossless_formats_read_back_exactly(tmp_path, fmt, suffix, options):
    pixels = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / f"a{suffix}", format=fmt, **options)
    assert (np.asarray(read_image(tmp_path / f"a{suffix}")) == pixels).all()


def test_jpeg_reads_close_to_its_pixels(tmp_path):
    pixels = np.full((32, 32, 3), (200, 30, 90), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    assert np.abs(np.asarray(read_image(tmp_path / "a.jpg")).astype(int) - pixels).max() <= 3


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red stays red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent -> white
    rgba[1, 0] = (0, 0, 255, 128)  # half blue over white -> (127, 127, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb = np.asarray(read_image(tmp_path / "a.png")).astype(int)
    assert (rgb[0, 0] == (255, 0, 0)).all() and (rgb[0, 1] == 255).all()
    assert np.abs(rgb[1, 0] - (127, 127, 255)).max() <= 1
    # a palette image whose index 0 is transparent
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.putpixel((1, 0), 1)
    p.save(tmp_path / "p.png", transparency=0)
    assert np.asarray(read_image(tmp_path / "p.png")).tolist() == [[[255, 255, 255], [10, 200, 30]]]


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
    """Pillow's own convert("RGB") clips 16-bit values above 255 to white; 32896 must become 128 (x 255/65535)."""
    Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16)).save(tmp_path / "g16.png")
    assert np.asarray(read_image(tmp_path / "g16.png"))[0, :, 0].tolist() == [0, 128, 255]


def test_gray_palette_and_cmyk_become_rgb(tmp_path):
    Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), "L").save(tmp_path / "g.png")
    assert np.asarray(read_image(tmp_path / "g.png")).tolist() == [[[0] * 3, [77] * 3, [255] * 3]]
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)  # no black, full M and Y
    rgb = np.asarray(read_image(tmp_path / "c.jpg")).astype(int)
    assert rgb.shape == (8, 8, 3) and np.abs(rgb[0, 0] - (255, 0, 0)).max() <= 3  # red


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored 120 x 60 with Orientation = 6 (rotate 90 degrees) is shown, and edited, as 60 x 120."""
    im = Image.new("RGB", (120, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "phone.jpg", exif=exif)
    x, g = load_image(tmp_path / "phone.jpg", size=128)
    assert g.original == (60, 120) and x.shape[-2:] == (256, 128)  # (H, W): portrait, shorter side 128


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG of 1 x 1 pixel whose IHDR says width x height (with a valid CRC): a decompression bomb's header."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


def test_bad_image_files_are_named_with_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    cases = {"empty.png": (b"", "empty file"), "text.png": (b"not an image at all", "not an image"),
             "bomb.png": (png_header_claiming(100_000, 100_000), "too many pixels.*refused before decoding")}
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good, format="PNG")
    cases["truncated.png"] = (good.getvalue()[:len(good.getvalue()) // 2], "truncated|corrupt")
    for name, (data, problem) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError, match=f"{name}.*({problem})"):
            read_image(tmp_path / name)
    assert 100_000 * 100_000 > MAX_PIXELS
    Image.new("RGB", (1, 1)).save(tmp_path / "big.png")  # our own limit, below Pillow's, from the header alone
    (tmp_path / "big.png").write_bytes(png_header_claiming(10_000, 9_000))
    with pytest.raises(ImageError, match="big.png.*10000 x 9000 pixels.*refused before decoding"):
        read_image(tmp_path / "big.png")


def test_save_png_round_trips_pixels(tmp_path):
    """(Atomicity: tests/test_files.py.)"""
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    path = save_png(im, tmp_path / "sub" / "out.png")
    assert (np.asarray(Image.open(path)) == np.asarray(im)).all()
