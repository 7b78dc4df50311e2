"""Tests for SDXL 1.0 base (Podell et al., arXiv:2307.01952) across models/ and loading/: a tiny random SDXL in both
layouts loads strictly and identically; the UNet with its added conditioning, every cross-attention map and the VAE
match diffusers on the same weights (the single file converted by diffusers' own code); the two text encoders match
transformers' CLIPTextModel / CLIPTextModelWithProjection as diffusers' SDXL pipeline reads them, and ViT-bigG from
a single file matches open_clip's tower written out here as sgm runs it (penultimate block without ln_final; pooled
from the full last layer + ln_final at the EOS token, times text_projection); padding; the full-size UNet's shapes
and parameter count against diffusers' on the meta device; refusals of the refiner and other unsupported files."""
import math
import re
import shutil

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from diffusers.utils import logging as diffusers_logging
from einops import rearrange
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from diffusers_reference import assert_vae_matches, diffusers_unet, diffusers_vae, recorded_cross_attention
from pix2pix_zero.loading import convert, openclip
from pix2pix_zero.loading.checkpoint import CheckpointError
from pix2pix_zero.loading.load import folder_heads, load_sd, unet_config
from pix2pix_zero.loading.random_checkpoint import diffusers_configs, make_checkpoint, sdxl_models
from pix2pix_zero.models.attention import record_cross_attention
from pix2pix_zero.models.text import L
from pix2pix_zero.models.unet import UNet

diffusers_logging.set_verbosity_error()

TOL = 1e-4
BOS, EOS = 49406, 49407
CAT = [BOS, 320, 1125, 539, 320, 2368, EOS]  # "a photo of a cat"
PROMPTS = ["a photo of a cat", "a watercolor painting of a dog"]
SDXL_BASE_PARAMETERS = 2_567_463_684  # diffusers' UNet2DConditionModel with SDXL 1.0 base's config, counted on meta


@pytest.fixture(scope="module")
def sdxl_files(tmp_path_factory):
    """A tiny SDXL single file and diffusers folder with the same weights (seed 0)."""
    folder = tmp_path_factory.mktemp("sdxl")
    return (make_checkpoint(folder / "tiny-sdxl.safetensors", "single", family="sdxl"),
            make_checkpoint(folder / "tiny-sdxl-diffusers", "diffusers", family="sdxl"))


@pytest.fixture(scope="module")
def sdxl_single(sdxl_files):
    return load_sd(sdxl_files[0])


@pytest.fixture(scope="module")
def sdxl(sdxl_files):
    return load_sd(sdxl_files[1])


def inputs(seed=0, B=2, H=8, W=16, D=192, P=32):
    """Latents x_t (B, 4, H, W), non-square; context c (B, L, D); pooled (B, P); time_ids (B, 6), one per item."""
    g = torch.Generator().manual_seed(seed)
    time_ids = torch.tensor([[1024, 768, 0, 0, 1024, 1024], [512, 640, 32, 16, 768, 1024]], dtype=torch.float32)
    return (torch.randn(B, 4, H, W, generator=g), torch.randn(B, L, D, generator=g), torch.randn(B, P, generator=g),
            time_ids[:B])


# --- loading: both layouts, the config from shapes, skipped keys ------------------------------------------------

def test_both_layouts_load_the_same_sdxl_models(sdxl, sdxl_single):
    for model in (sdxl, sdxl_single):
        assert (model.family, model.prediction_type, model.latent_scale) == ("sdxl", "epsilon", 0.13025)
        assert model.unet.config == sdxl_models(False)[0]  # levels, attention, depths (1, 2, 3), pooled 32: shapes
        assert model.text_encoder.config.hidden_act == "quick_gelu"
        assert model.text_encoder_2.config.hidden_act == "gelu" and model.text_encoder_2.config.projection_dim == 32
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(sdxl, part).state_dict(), getattr(sdxl_single, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    assert sdxl.text_encoder_2.config.num_hidden_layers == 3  # every bigG block kept (SD 2.x drops the last)
    x_t, _, _, time_ids = inputs(B=1)
    with torch.no_grad():
        c, pooled = sdxl.encode_text_and_pooled(PROMPTS[:1])
        c_single, pooled_single = sdxl_single.encode_text_and_pooled(PROMPTS[:1])
        assert torch.equal(c, c_single) and torch.equal(pooled, pooled_single)
        out = sdxl.unet(x_t, 500, c, pooled=pooled, time_ids=time_ids)
        assert torch.equal(out, sdxl_single.unet(x_t, 500, c, pooled=pooled, time_ids=time_ids))


def test_skipped_keys_are_exactly_the_extras_of_the_single_file(sdxl, sdxl_single):
    assert sorted(sdxl_single.skipped) == sorted([
        "denoiser.sigmas", "model_ema.num_updates", openclip.SDXL_PREFIX + "logit_scale",
        "conditioner.embedders.0.transformer.text_model.embeddings.position_ids"])
    assert sdxl.skipped == []  # text_encoder_2's text_projection.weight is loaded, not skipped


def test_the_text_identity_covers_both_text_encoders(sdxl_files, tmp_path):
    folder = tmp_path / "other-bigG"
    shutil.copytree(sdxl_files[1], folder)
    weights = load_file(folder / "text_encoder_2" / "model.safetensors")
    weights["text_projection.weight"] = weights["text_projection.weight"] + 1.0
    save_file(weights, folder / "text_encoder_2" / "model.safetensors")
    assert load_sd(folder).text_identity != load_sd(sdxl_files[1]).text_identity


# --- UNet with added conditioning, cross-attention maps, VAE against diffusers ---------------------------------

@pytest.fixture(scope="module")
def reference_unet(sdxl_files):
    return diffusers_unet(sdxl_files, "diffusers")


@pytest.fixture(scope="module")
def converted_unet(sdxl_files):
    return diffusers_unet(sdxl_files, "single")  # label_emb converted too


@pytest.mark.parametrize("layout", ["single", "diffusers"])
def test_unet_with_added_conditioning_matches_diffusers(sdxl, sdxl_single, reference_unet, converted_unet, layout):
    ours, theirs = (sdxl_single.unet, converted_unet) if layout == "single" else (sdxl.unet, reference_unet)
    assert theirs.config.addition_embed_type == "text_time" and theirs.config.transformer_layers_per_block == [1, 2, 3]
    x_t, c, pooled, time_ids = inputs()
    with torch.no_grad():
        for t in (torch.tensor([10, 900]), 500):
            out = ours(x_t, t, c, pooled=pooled, time_ids=time_ids)
            ref = theirs(x_t, t, encoder_hidden_states=c,
                         added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
            assert out.shape == x_t.shape and (out - ref).abs().max() <= TOL
        assert ref.abs().max() > 0.1
        # the added conditioning is read: other sizes or another pooled embedding change the prediction
        assert (ours(x_t, 500, c, pooled=pooled, time_ids=time_ids.flip(0)) - out).abs().max() > 1e-3
        assert (ours(x_t, 500, c, pooled=pooled.flip(0), time_ids=time_ids) - out).abs().max() > 1e-3


def test_one_row_of_time_ids_serves_the_whole_batch(sdxl):
    x_t, c, pooled, time_ids = inputs()
    with torch.no_grad():
        row = sdxl.unet(x_t, 500, c, pooled=pooled, time_ids=time_ids[0])
        assert torch.equal(row, sdxl.unet(x_t, 500, c, pooled=pooled, time_ids=time_ids[:1].expand(2, -1)))


def test_added_conditioning_is_required_by_sdxl_and_refused_elsewhere(sdxl, sd):
    x_t, c, pooled, time_ids = inputs(B=1)
    with pytest.raises(ValueError, match=r"needs pooled=.*time_ids="):
        sdxl.unet(x_t, 500, c)
    with pytest.raises(ValueError, match=r"pooled has shape \(1, 31\)"):
        sdxl.unet(x_t, 500, c, pooled=pooled[:, :31], time_ids=time_ids)
    with pytest.raises(ValueError, match="no added embedding"):
        sd.unet(x_t, 500, c[..., :64], pooled=pooled, time_ids=time_ids)
    assert sd.unet.add_embedding is None and sd.text_encoder_2 is None and sd.encode_text_and_pooled(["a"])[1] is None


def test_every_cross_attention_map_matches_diffusers(sdxl, reference_unet):
    x_t, c, pooled, time_ids = inputs(seed=1)
    with torch.no_grad(), record_cross_attention(sdxl.unet) as maps, recorded_cross_attention(reference_unet) as calls:
        sdxl.unet(x_t, 300, c, pooled=pooled, time_ids=time_ids)
        reference_unet(x_t, 300, encoder_hidden_states=c,
                       added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids})
    assert list(maps) == [name for name, _ in calls]  # same names, same call order
    # level 1: 2 x 2 blocks, level 2: 2 x 3, mid: 3, up: 3 x 3 + 3 x 2; none at level 0
    assert len(maps) == 28 and not any(name.startswith(("down_blocks.0.", "up_blocks.2.")) for name in maps)
    assert "mid_block.attentions.0.transformer_blocks.2.attn2" in maps
    assert {M.shape[1] for M in maps.values()} == {1, 2}  # 64-channel heads at widths 64 and 128
    for name, M_ref in calls:
        assert maps[name].shape == M_ref.shape and (maps[name] - M_ref).abs().max() <= TOL, name


@pytest.mark.parametrize("layout", ["single", "diffusers"])
def test_vae_matches_diffusers(sdxl_files, sdxl, sdxl_single, layout):
    theirs = diffusers_vae(sdxl_files, layout)
    assert theirs.config.scaling_factor == sdxl.latent_scale == 0.13025  # sgm sd_xl_base.yaml: scale_factor
    assert_vae_matches((sdxl_single if layout == "single" else sdxl).vae, theirs, TOL)


# --- the two text encoders --------------------------------------------------------------------------------------

def test_tokenizers_pad_as_sdxl_does(sdxl, sdxl_single, sdxl_files):
    """CLIP ViT-L pads with <|endoftext|> (transformers' openai/clip-vit-large-patch14 tokenizer, as sgm's
    FrozenCLIPEmbedder uses it); ViT-bigG with "!" = id 0 (open_clip.tokenize fills with zeros; diffusers'
    tokenizer_2). The folder's own tokenizers agree."""
    for model in (sdxl, sdxl_single):
        assert model.tokenizer(PROMPTS[:1], padding="max_length", max_length=L).input_ids[0] == CAT + [EOS] * 70
        assert model.tokenizer_2(PROMPTS[:1], padding="max_length", max_length=L).input_ids[0] == CAT + [0] * 70
    for sub, model_tokenizer in (("tokenizer", sdxl.tokenizer), ("tokenizer_2", sdxl.tokenizer_2)):
        theirs = CLIPTokenizer.from_pretrained(sdxl_files[1] / sub)
        assert theirs(PROMPTS, padding="max_length", max_length=L).input_ids == \
            model_tokenizer(PROMPTS, padding="max_length", max_length=L).input_ids


@pytest.mark.parametrize("layout", ["single", "diffusers"])
def test_text_encoders_match_transformers_as_the_sdxl_pipeline_reads_them(sdxl_files, sdxl, sdxl_single, layout):
    """Reference: transformers' CLIPTextModel and CLIPTextModelWithProjection from the folder, read as diffusers'
    StableDiffusionXLPipeline.encode_prompt does: hidden_states[-2] of each, concatenated; text_embeds pooled."""
    folder = sdxl_files[1]
    encoders = (CLIPTextModel.from_pretrained(folder / "text_encoder").eval(),
                CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2").eval())
    tokenizers = [CLIPTokenizer.from_pretrained(folder / sub) for sub in ("tokenizer", "tokenizer_2")]
    with torch.no_grad():
        outs = [enc(tok(PROMPTS, padding="max_length", max_length=L, truncation=True, return_tensors="pt").input_ids,
                    output_hidden_states=True) for enc, tok in zip(encoders, tokenizers)]
        c_ref = torch.cat([out.hidden_states[-2] for out in outs], dim=-1)
        c, pooled = (sdxl_single if layout == "single" else sdxl).encode_text_and_pooled(PROMPTS)
    assert c.shape == (2, L, 64 + 128) and pooled.shape == (2, 32)
    assert (c - c_ref).abs().max() <= TOL and (pooled - outs[1].text_embeds).abs().max() <= TOL
    # no final layer norm on c: applying CLIP ViT-L's would change it
    final_norm = encoders[0].text_model.final_layer_norm if hasattr(encoders[0], "text_model") else \
        encoders[0].final_layer_norm
    with torch.no_grad():
        assert (final_norm(c[..., :64]) - c[..., :64]).abs().max() > 0.1


def openclip_bigg(w: dict, ids: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sgm's FrozenOpenCLIPEmbedder2(layer="penultimate", always_return_pooled=True, legacy=False) written out on
    open_clip's own tensors (keys without the prefix): (the input of the last block, no ln_final;
    ln_final(the last block's output) at the largest token id (the EOS) @ text_projection)."""

    def ln(x, name):
        return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps=1e-5)

    def linear(x, name):
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    n_blocks = 1 + max(int(k.split(".")[2]) for k in w if k.startswith("transformer.resblocks."))
    x = w["token_embedding.weight"][ids] + w["positional_embedding"]
    mask = torch.full((ids.shape[1], ids.shape[1]), -math.inf).triu(1)  # open_clip's build_attention_mask
    for i in range(n_blocks):
        if i == n_blocks - 1:
            penultimate = x
        p = f"transformer.resblocks.{i}"
        qkv = ln(x, f"{p}.ln_1") @ w[f"{p}.attn.in_proj_weight"].T + w[f"{p}.attn.in_proj_bias"]
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=heads)
        attn = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask).softmax(-1) @ v
        x = x + linear(rearrange(attn, "b h n d -> b n (h d)"), f"{p}.attn.out_proj")
        x = x + linear(F.gelu(linear(ln(x, f"{p}.ln_2"), f"{p}.mlp.c_fc")), f"{p}.mlp.c_proj")
    pooled = ln(x, "ln_final")[torch.arange(ids.shape[0]), ids.argmax(dim=-1)] @ w["text_projection"]
    return penultimate, pooled


def test_bigg_from_the_single_file_is_open_clips_tower(sdxl_files, sdxl_single):
    w = {k.removeprefix(openclip.SDXL_PREFIX): v for k, v in load_file(sdxl_files[0]).items()
         if k.startswith(openclip.SDXL_PREFIX)}
    assert w["text_projection"].shape == (128, 32)  # open_clip's (D, P), used as x @ P
    dog = sdxl_single.tokenizer_2(PROMPTS[1]).input_ids
    ids = torch.tensor([CAT + [0] * (L - 7), dog + [0] * (L - len(dog))])  # open_clip.tokenize's padding, by hand
    penultimate, pooled_ref = openclip_bigg(w, ids, heads=2)
    with torch.no_grad():
        c, pooled = sdxl_single.encode_text_and_pooled(PROMPTS)
    torch.testing.assert_close(c[..., 64:], penultimate, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, pooled_ref, rtol=1e-5, atol=1e-5)
    with_final_norm = F.layer_norm(penultimate, (128,), w["ln_final.weight"], w["ln_final.bias"])
    assert (with_final_norm - penultimate).abs().max() > 0.1  # SD 2.x's ln_final here would be visible


def test_encode_text_packs_c_pooled_and_time_ids_and_the_unet_reads_them_back(sdxl):
    """encode_text's (B, 78, 2048): the 77 rows of c, then [pooled | the six numbers | 0]; the UNet given the
    packed tensor computes what it computes from the three given apart."""
    from pix2pix_zero.models.unet import unpack_conditioning
    ids = (768, 1024, 16, 0, 512, 512)
    with torch.no_grad():
        packed = sdxl.encode_text(PROMPTS, ids)
        c, pooled = sdxl.encode_text_and_pooled(PROMPTS)
        assert packed.shape == (len(PROMPTS), 78, c.shape[-1]) and sdxl.conditioning_shape == (78, c.shape[-1])
        assert torch.equal(packed[:, :77], c) and torch.equal(packed[:, 77, :pooled.shape[-1]], pooled)
        P = pooled.shape[-1]
        assert packed[:, 77, P:P + 6].tolist() == [list(map(float, ids))] * len(PROMPTS)
        assert not packed[:, 77, P + 6:].any()
        _, _, time_ids = unpack_conditioning(packed, sdxl.unet.config)
        x = torch.randn(len(PROMPTS), 4, 8, 8, generator=torch.Generator().manual_seed(0))
        apart = sdxl.unet(x, 500, c, pooled=pooled, time_ids=torch.tensor(ids, dtype=torch.float32))
        assert torch.equal(sdxl.unet(x, 500, packed), apart) and torch.equal(time_ids[0], torch.tensor(ids).float())
        default = sdxl.encode_text(PROMPTS)  # SDXL's native 1024 x 1024, uncropped
        assert default[0, 77, P:P + 6].tolist() == [1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]


# --- full size on the meta device: shapes, parameter count, the rules, the config from shapes -------------------

def test_full_size_unet_is_diffusers_sdxl_base():
    """Same names and shapes as diffusers' UNet2DConditionModel from SDXL 1.0 base's config (sgm
    configs/inference/sd_xl_base.yaml in diffusers' terms), and its parameter count; nothing is allocated."""
    ucfg, vcfg, text_cfg, _ = sdxl_models(True)
    config = diffusers_configs(ucfg, vcfg, text_cfg)["unet"]
    assert config["attention_head_dim"] == [5, 10, 20] and config["projection_class_embeddings_input_dim"] == 2816
    with torch.device("meta"):
        ours = UNet(ucfg).state_dict()
        theirs = UNet2DConditionModel.from_config(config).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert sum(v.numel() for v in theirs.values()) == sum(v.numel() for v in ours.values()) == SDXL_BASE_PARAMETERS
    shapes = {k: tuple(v.shape) for k, v in ours.items()}
    assert unet_config(shapes, "sdxl") == ucfg  # depths 1, 2, 10 and pooled 1280 read back from the shapes


def test_full_size_rules_rename_every_key_one_to_one_and_agree_with_diffusers():
    ucfg, vcfg, text_cfg, _ = sdxl_models(True)
    with torch.device("meta"):
        unet = UNet(ucfg).state_dict()
    table = convert.unet_table(3, 2, [False, True, True], added_embedding=True)
    ldm = [convert.rename(k, table, to_ours=False) for k in unet]
    assert None not in ldm and len(set(ldm)) == len(ldm) and [convert.rename(n, table) for n in ldm] == list(unet)
    assert convert.unet_layout(ldm) == (3, 2, [False, True, True])
    for ldm_name, ours in [("label_emb.0.0.weight", "add_embedding.linear_1.weight"),
                           ("label_emb.0.2.bias", "add_embedding.linear_2.bias"),
                           ("input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight",
                            "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight"),
                           ("middle_block.1.transformer_blocks.9.ff.net.2.weight",
                            "mid_block.attentions.0.transformer_blocks.9.ff.net.2.weight"),
                           ("output_blocks.2.2.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"),
                           ("output_blocks.8.0.skip_connection.weight", "up_blocks.2.resnets.2.conv_shortcut.weight")]:
        assert ours in unet and convert.rename(ldm_name, table) == ours
    checkpoint = {"model.diffusion_model." + n: v for n, v in zip(ldm, unet.values())}
    converted = convert_ldm_unet_checkpoint(checkpoint, diffusers_configs(ucfg, vcfg, text_cfg)["unet"])
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in unet.items()}


def test_folder_heads_count_only_levels_with_attention(tmp_path):
    for heads, widths in (([5, 10, 20], [320, 640, 1280]), ([1, 1, 2], [32, 64, 128])):
        (tmp_path / "config.json").write_text(f'{{"attention_head_dim": {heads}, "block_out_channels": {widths}, '
                                              '"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", '
                                              '"CrossAttnDownBlock2D"]}')
        assert folder_heads(tmp_path / "config.json") == (None, 64)


# --- refusals ------------------------------------------------------------------------------------------------------

SUPPORTED = r"not supported \(pix2pix_zero loads SD 1\.x, SD 2\.x and SDXL 1\.0 base text-to-image checkpoints\)"


def load_error(path, *problems: str) -> str:
    with pytest.raises(CheckpointError) as e:
        load_sd(path)
    message = str(e.value)
    assert str(path) in message and "\n" not in message  # one line naming the file, not a traceback
    for problem in problems:
        assert re.search(problem, message), (problem, message)
    return message


@pytest.fixture(scope="module")
def sdxl_tensors(sdxl_files):
    return load_file(sdxl_files[0])


def test_sdxl_refiner_single_file_is_refused(tmp_path, sdxl_tensors):
    """The refiner: only ViT-bigG, as conditioner.embedders.0.model, and 5 ids (aesthetic score) in label_emb."""
    refiner = {k.replace("conditioner.embedders.1.", "conditioner.embedders.0."): v for k, v in sdxl_tensors.items()
               if not k.startswith("conditioner.embedders.0.")}
    save_file(refiner, tmp_path / "sd_xl_refiner_1.0.safetensors")
    load_error(tmp_path / "sd_xl_refiner_1.0.safetensors", "an SDXL refiner", SUPPORTED)


def test_sdxl_refiner_folder_is_refused(tmp_path, sdxl_files):
    folder = tmp_path / "refiner"
    shutil.copytree(sdxl_files[1], folder, ignore=shutil.ignore_patterns("text_encoder", "tokenizer"))
    load_error(folder, r"an SDXL refiner folder \(text_encoder_2/ without text_encoder/\)", SUPPORTED)


def test_an_added_embedding_of_other_inputs_is_refused(tmp_path, sdxl_tensors):
    """add_embedding with the refiner's five size/crop/score ids (32 + 5 x 256 inputs) under base's encoders."""
    key = "model.diffusion_model.label_emb.0.0.weight"
    path = tmp_path / "five-ids.safetensors"
    save_file(sdxl_tensors | {key: sdxl_tensors[key][:, :32 + 5 * 256].contiguous()}, path)
    load_error(path, r"add_embedding takes 1312 inputs \(SDXL 1\.0 base: the 32-wide pooled embedding \+ 6 x 256 "
                     r"size/crop embeddings = 1568\)", SUPPORTED)


@pytest.mark.parametrize("drop, what", [
    ("conditioner.embedders.1.", r"SDXL-style checkpoint \(conditioner\.\*\) without SDXL 1\.0 base's two text "
                                 r"encoders \(it holds: conditioner\.embedders\.0"),
    ("conditioner.", r"class-conditioned UNet \(label_emb\) without SDXL's text encoders"),
])
def test_incomplete_sdxl_single_files_are_refused(tmp_path, sdxl_tensors, single_file, drop, what):
    sd1_text = {k: v for k, v in load_file(single_file).items() if k.startswith("cond_stage_model.")}
    path = tmp_path / "incomplete.safetensors"
    save_file({k: v for k, v in sdxl_tensors.items() if not k.startswith(drop)} | sd1_text, path)
    load_error(path, what, SUPPORTED)


def test_mixed_sdxl_families_are_refused(tmp_path, sdxl_tensors, sdxl_files, single_file):
    sd1_unet = {k: v for k, v in load_file(single_file).items() if k.startswith("model.diffusion_model.")}
    path = tmp_path / "mixed.safetensors"
    save_file({k: v for k, v in sdxl_tensors.items() if not k.startswith("model.diffusion_model.")} | sd1_unet, path)
    load_error(path, r"mixed families: the UNet is SD 1\.x .* text encoder is CLIP ViT-L \+ OpenCLIP ViT-bigG")
    folder = tmp_path / "no-text-encoder-2"
    shutil.copytree(sdxl_files[1], folder, ignore=shutil.ignore_patterns("text_encoder_2"))
    load_error(folder, r"mixed families: the UNet is SDXL \(add_embedding\) but the text encoder is one CLIP")
