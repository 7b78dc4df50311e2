"""Tests for pix2pix_zero.loading.load and pix2pix_zero.loading.checkpoint: both layouts load the same weights; files of any float
dtype load at the requested dtype; the keys no model uses are reported; the text encoder matches diffusers' own
conversion; every broken or unsupported checkpoint fails with a CheckpointError naming the file and the problem;
pickles are refused without being unpickled; loading never writes to the checkpoint."""
import hashlib
import os
import re
import struct

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from pix2pix_zero.loading.checkpoint import CheckpointError
from pix2pix_zero.loading.load import load_sd
from pix2pix_zero.loading.random_checkpoint import make_checkpoint


def state_dicts(sd):
    return {part: getattr(sd, part).state_dict() for part in ("unet", "vae", "text_encoder")}


def assert_same_weights(a, b):
    for part, weights in state_dicts(a).items():
        other = state_dicts(b)[part]
        assert weights.keys() == other.keys(), part
        assert all(torch.equal(weights[k], other[k]) for k in weights), part


def test_both_layouts_load_the_same_models(sd, sd_single, legacy_vae_folder):
    assert_same_weights(sd, sd_single)
    assert_same_weights(sd, load_sd(legacy_vae_folder))
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(1, 4, 8, 8, generator=g)
    c = sd.encode_text(["a photo of a cat"])
    assert torch.equal(c, sd_single.encode_text(["a photo of a cat"]))
    with torch.no_grad():
        assert torch.equal(sd.unet(x_t, 500, c), sd_single.unet(x_t, 500, c))
        assert torch.equal(sd.vae.decode(x_t), sd_single.vae.decode(x_t))


def test_load_reports_what_it_found(sd, sd_single):
    assert (sd.family, sd.prediction_type, sd.latent_scale) == ("sd1", "epsilon", 0.18215)
    assert (sd_single.family, sd_single.prediction_type) == ("sd1", "epsilon")
    assert sd.identity != sd_single.identity  # different files


def test_skipped_keys_are_exactly_the_extras_of_the_single_file(sd, sd_single):
    assert sorted(sd_single.skipped) == sorted([
        "betas", "alphas_cumprod", "model_ema.num_updates",
        "cond_stage_model.transformer.text_model.embeddings.position_ids"])
    assert sd.skipped == []


def test_single_file_text_encoder_matches_diffusers_own_conversion(sd_single, single_file, diffusers_folder):
    """Reference: diffusers' convert_ldm_clip_checkpoint into a transformers CLIPTextModel, tokenized by the
    tokenizer the diffusers folder carries."""
    weights = convert_ldm_clip_checkpoint(load_file(single_file))
    reference = CLIPTextModel(CLIPTextConfig.from_pretrained(diffusers_folder / "text_encoder")).eval()
    prefix = "text_model." if hasattr(reference, "text_model") else ""  # transformers 5 has no text_model level
    reference.load_state_dict({prefix + k.removeprefix("text_model."): v for k, v in weights.items()
                               if not k.endswith("position_ids")}, strict=True)
    tokenizer = CLIPTokenizer.from_pretrained(diffusers_folder / "tokenizer")
    ids = tokenizer(["a photo of a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        theirs = reference(ids).last_hidden_state
    ours = sd_single.encode_text(["a photo of a cat"])
    assert ours.shape == theirs.shape == (1, 77, 64)
    assert (ours - theirs).abs().max() <= 1e-4


# --- dtypes ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def half_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("half")
    return {dtype: make_checkpoint(folder / f"{dtype}.safetensors", dtype=dtype)
            for dtype in (torch.float16, torch.bfloat16)}


@pytest.mark.parametrize("file_dtype", [torch.float16, torch.bfloat16], ids=["fp16-file", "bf16-file"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["to-fp32", "to-bf16"])
def test_half_files_load_at_the_requested_dtype(half_files, sd_single, file_dtype, dtype):
    """The UNet and text encoder at `dtype`; the VAE at fp32 unless vae_dtype says otherwise."""
    for vae_dtype in (torch.float32, dtype):
        loaded = load_sd(half_files[file_dtype], dtype=dtype, vae_dtype=vae_dtype)
        for part, weights in state_dicts(loaded).items():
            want = vae_dtype if part == "vae" else dtype
            params = dict(getattr(loaded, part).named_parameters())
            assert params and all(p.dtype == want for p in params.values()), part
            reference = state_dicts(sd_single)[part]  # the same seed in fp32, rounded as the file was
            for k, w in weights.items():
                if w.is_floating_point():
                    assert torch.equal(w, reference[k].to(file_dtype).to(want)), k


# --- errors ------------------------------------------------------------------------------------------------------

def load_error(path, *problems: str) -> str:
    """load_sd(path) raises a CheckpointError whose message names `path` and matches each regex in `problems`."""
    with pytest.raises(CheckpointError) as e:
        load_sd(path)
    message = str(e.value)
    assert str(path) in message
    for problem in problems:
        assert re.search(problem, message), (problem, message)
    return message


@pytest.fixture(scope="module")
def tensors(single_file):
    return load_file(single_file)


def variant(tmp_path, tensors: dict, name="variant.safetensors"):
    path = tmp_path / name
    save_file(tensors, path)
    return path


def test_missing_keys_are_reported_grouped_by_prefix(tmp_path, tensors):
    removed = ("model.diffusion_model.output_blocks.3.1.", "model.diffusion_model.output_blocks.8.0.")
    path = variant(tmp_path, {k: v for k, v in tensors.items() if not k.startswith(removed)})
    message = load_error(path, r"\(UNet\)", r"missing 38 keys: up_blocks\.1\.attentions \(26 keys\), "
                         r"up_blocks\.2\.resnets \(12 keys\)")
    assert "transformer_blocks" not in message and "conv1" not in message  # grouped, not a list of 38 names


@pytest.mark.parametrize("removed, part", [
    ("model.diffusion_model.input_blocks.0.0.", "conv_in"),
    ("first_stage_model.encoder.conv_in.", "encoder.conv_in"),
    ("cond_stage_model.transformer.text_model.embeddings.token_embedding.", "token_embedding"),
])
def test_missing_keys_the_shapes_are_read_from_are_reported(tmp_path, tensors, removed, part):
    path = variant(tmp_path, {k: v for k, v in tensors.items() if not k.startswith(removed)})
    load_error(path, "cannot infer the model shapes", part)


def test_unexpected_keys_are_reported(tmp_path, tensors):
    path = variant(tmp_path, tensors | {"model.diffusion_model.input_blocks.1.1.extra.weight": torch.zeros(3)})
    load_error(path, r"\(UNet\)", r"unexpected 1 keys: down_blocks\.0\.attentions \(1 key\)")
    extras = {"model.diffusion_model.foo.weight": torch.zeros(3), "some_other_model.bar": torch.zeros(3)}
    path = variant(tmp_path, tensors | extras)
    load_error(path, r"2 keys no rule covers: .*model\.diffusion_model\.foo")


def test_shape_mismatch_is_reported(tmp_path, tensors):
    key = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
    path = variant(tmp_path, tensors | {key: torch.zeros(32, 32, 3, 1)})
    load_error(path, r"shape mismatch down_blocks\.0\.resnets\.0\.conv1\.weight: checkpoint \(32, 32, 3, 1\)")


@pytest.mark.parametrize("keep, problem", [
    (lambda size: size - 1000, "truncated file"),
    (lambda size: 1000, "truncated"),
    (lambda size: 5, "too short"),
], ids=["in-the-data", "in-the-header", "in-the-length"])
def test_truncated_file_is_reported(tmp_path, single_file, keep, problem):
    data = single_file.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:keep(len(data))])
    load_error(path, problem)


def test_corrupt_header_is_reported(tmp_path, single_file):
    data = single_file.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    garbage = bytes(torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8))
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(data[:8] + garbage + data[8 + n:])  # right length, garbage JSON
    load_error(path, "corrupt safetensors header")
    path.write_bytes(garbage[:8] + data[8:])  # garbage length
    load_error(path, "not a safetensors file")


class WouldTouchFile:
    """Unpickling this creates `path`: the trap that shows whether a file was unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickle_checkpoint_is_refused_without_unpickling(tmp_path, zip_format):
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"trap": WouldTouchFile(marker), "w": torch.zeros(2)}}, path,
               _use_new_zipfile_serialization=zip_format)
    load_error(path, "pickle", r"safetensors\.torch", "save_file")  # names the problem and how to convert
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the trap works: unpickling would have created the marker
    assert marker.exists()


def test_a_stray_sdxl_conditioner_key_is_refused(tmp_path, tensors):
    """An SD 1.x file with a conditioner.* key is neither SD 1.x nor SDXL 1.0 base (tests/test_sdxl.py loads SDXL)."""
    load_error(variant(tmp_path, tensors | {"conditioner.embedders.0.x": torch.zeros(1)}), "SDXL-style checkpoint",
               "not supported")


def test_inpainting_single_file_is_refused(tmp_path, tensors):
    key = "model.diffusion_model.input_blocks.0.0.weight"
    conv_in = tensors[key]
    nine = torch.cat([conv_in, torch.zeros(conv_in.shape[0], 5, *conv_in.shape[2:])], dim=1)
    load_error(variant(tmp_path, tensors | {key: nine}), "inpainting")


def test_openclip_text_keys_on_an_sd1_file_are_reported(tmp_path, tensors):
    """SD 2.x's text tower is OpenCLIP (cond_stage_model.model.*); here its keys sit on an SD 1.x UNet, with
    CLIP's layer names, so whichever check meets it first must say SD 2.x or OpenCLIP."""
    openclip = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.model."): v
                for k, v in tensors.items()}
    load_error(variant(tmp_path, openclip), r"SD 2\.x|OpenCLIP")


def test_empty_folder_is_reported(tmp_path):
    load_error(tmp_path, "no checkpoint here")


def test_folder_with_only_a_bin_is_reported_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    folder = tmp_path / "bare"
    folder.mkdir()
    torch.save({"trap": WouldTouchFile(marker)}, folder / "pytorch_model.bin")
    load_error(folder, "no checkpoint here", "safetensors")
    diffusers_like = tmp_path / "diffusers-bin"
    for sub, name in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                      ("text_encoder", "pytorch_model")):
        (diffusers_like / sub).mkdir(parents=True)
        torch.save({"trap": WouldTouchFile(marker)}, diffusers_like / sub / f"{name}.bin")
    message = load_error(diffusers_like, "pickle", "save_file")
    assert "diffusion_pytorch_model.bin" in message  # names the file it refused
    assert not marker.exists()


def test_missing_path_is_reported(tmp_path):
    load_error(tmp_path / "nowhere.safetensors", "no such file")


# --- loading is read-only ------------------------------------------------------------------------------------------

def snapshot(root):
    """{relative path: (size, mtime_ns, sha256)} of every file under root (or of root itself)."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root.parent)): (p.stat().st_size, p.stat().st_mtime_ns,
                                              hashlib.sha256(p.read_bytes()).hexdigest()) for p in files}


def test_loading_never_modifies_the_checkpoint(single_file, diffusers_folder, legacy_vae_folder):
    paths = (single_file, diffusers_folder, legacy_vae_folder)
    before = [snapshot(p) for p in paths]
    listing = sorted(os.listdir(single_file.parent))
    for p in paths:
        load_sd(p, dtype=torch.bfloat16)
    assert [snapshot(p) for p in paths] == before
    assert sorted(os.listdir(single_file.parent)) == listing  # no caches or lock files written beside them


def test_fingerprint_changes_when_one_tensor_in_the_middle_changes(tmp_path):
    """A merge or fine-tune that touches a few tensors must not keep the base file's identity."""
    from safetensors.torch import save_file

    from pix2pix_zero.loading.checkpoint import SafetensorsFile
    tensors = {f"layer{i:02d}.weight": torch.randn(256, 256, generator=torch.Generator().manual_seed(i))
               for i in range(20)}
    save_file(tensors, tmp_path / "base.safetensors")
    tensors["layer10.weight"] = tensors["layer10.weight"] + 1e-3
    save_file(tensors, tmp_path / "merged.safetensors")
    save_file(dict(tensors), tmp_path / "copy.safetensors")
    base, merged, copy = (SafetensorsFile(tmp_path / f"{n}.safetensors").fingerprint() for n in ("base", "merged", "copy"))
    assert base != merged and merged == copy
