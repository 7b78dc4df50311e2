"""Tests for pix2pix_zero.world.train: a few steps lower each loss, a resumed stage continues exactly, the latent
rescaling is exact and unit-variance, and the written checkpoint is an ordinary SD file that load_sd reads."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from pix2pix_zero.loading.clip_text import load_tokenizer
from pix2pix_zero.loading.load import load_sd
from pix2pix_zero.models.vae import LATENT_SCALE
from pix2pix_zero.world import scenes, train

SMALL = dict(n_train=64, vae_channels=(32, 32, 32, 32), vae_crop=32, vae_batch=8, unet_channels=(32, 32, 32, 32),
             unet_layers=1, unet_batch=8, warmup=2, save_every=1000, vae_lr=2e-3, unet_lr=2e-3, vae_full_steps=2,
             vae_full_batch=4)


@pytest.fixture(scope="module")
def images():
    return np.stack([scenes.render(scenes.sample_scene(i), 64)[0] for i in range(64)])


def config(**changes):
    return dataclasses.replace(train.TrainConfig(**SMALL, size=64), **changes)


@pytest.mark.slow
def test_vae_steps_lower_the_loss(images, tmp_path, one_thread):
    """On 8 whole scenes (no crops: the loss is not a lottery of crop positions) the L1 falls within 40 steps."""
    _, (stage, _) = train.train_vae(config(vae_steps=40, vae_lr=5e-3, vae_crop=64, vae_full_steps=0), images[:8],
                                    tmp_path, "cpu")
    assert np.mean(stage.losses[-10:]) < 0.8 * np.mean(stage.losses[:10])


def test_unet_steps_lower_the_loss(images, tmp_path, one_thread):
    cfg = config(vae_steps=1, unet_steps=30)
    vae, _ = train.train_vae(cfg, images, tmp_path, "cpu")
    latents = train.encode_dataset(vae, images, tmp_path, "cpu")
    text = train.frozen_text_encoder(cfg, "cpu")
    _, stage = train.train_unet(cfg, latents, text, load_tokenizer(), tmp_path, "cpu")
    assert np.mean(stage.losses[-8:]) < 0.9 * np.mean(stage.losses[:8])


def test_resumed_stage_continues_exactly(images, tmp_path, one_thread):
    """4 steps at once, or 2 steps, a saved state, a fresh process's worth of objects, 2 more: the same losses
    and weights (the data generator's state is part of the saved state)."""
    _, (_, straight) = train.train_vae(config(vae_steps=2, vae_full_steps=4), images, tmp_path / "a", "cpu")
    (tmp_path / "b").mkdir()
    train.train_vae(config(vae_steps=2, vae_full_steps=2, save_every=2), images, tmp_path / "b", "cpu")
    vae, (_, resumed) = train.train_vae(config(vae_steps=2, vae_full_steps=4), images, tmp_path / "b", "cpu")
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-6)
    for k, v in straight.ema.items():
        assert torch.allclose(v, resumed.ema[k], atol=1e-6), k


def test_every_config_field_is_a_stage_setting_or_named_as_none():
    """A field added to TrainConfig must be sorted: into the settings of the stages whose weights it changes (a
    resume under another value is then refused), or into NOT_SETTINGS."""
    fields = set(train.TrainConfig.__dataclass_fields__)
    sorted_ = set(train.NOT_SETTINGS).union(*map(set, train.STAGE_SETTINGS.values()))
    assert sorted_ == fields, (fields - sorted_, sorted_ - fields)
    assert set(train.STAGE_SETTINGS["vae"]) < set(train.STAGE_SETTINGS["vae-full"]) < set(train.STAGE_SETTINGS["unet"])


def test_a_stage_refuses_a_state_trained_with_other_settings(images, tmp_path, one_thread):
    """A finished VAE state in --work is kept under the same settings (and under a changed UNet setting, which
    it does not depend on), and refused, naming the field, under a changed VAE setting: a finished stage would
    otherwise be kept as it was while the card named the new value."""
    train.train_vae(config(vae_steps=2, vae_full_steps=0), images, tmp_path, "cpu")
    _, (kept, _) = train.train_vae(config(vae_steps=2, vae_full_steps=0, unet_lr=1e-4), images, tmp_path, "cpu")
    assert kept.step == 2 and len(kept.losses) == 2
    with pytest.raises(ValueError, match=r"vae-state.pt: this vae state was trained with other settings \(vae_kl "
                                         r"0.0001, now 0.01\)"):
        train.train_vae(config(vae_steps=2, vae_full_steps=0, vae_kl=1e-2), images, tmp_path, "cpu")
    # a state saved before a setting existed was made at its default, and resumes under it
    state = torch.load(tmp_path / "vae-state.pt", weights_only=True)
    state["settings"] = json.dumps({k: v for k, v in json.loads(state["settings"]).items() if k != "object_scale"})
    torch.save(state, tmp_path / "vae-state.pt")
    assert train.train_vae(config(vae_steps=2, vae_full_steps=0), images, tmp_path, "cpu")[1][0].step == 2
    with pytest.raises(ValueError, match=r"other settings \(object_scale 1.0, now 1.4\)"):
        train.train_vae(config(vae_steps=2, vae_full_steps=0, object_scale=1.4), images, tmp_path, "cpu")
    # and a longer run of the same settings resumes it: the step count is not a setting
    _, (longer, _) = train.train_vae(config(vae_steps=3, vae_full_steps=0), images, tmp_path, "cpu")
    assert longer.step == 3 and longer.losses[:2] == kept.losses


def test_latent_cache_belongs_to_its_vae(images, tmp_path, one_thread, monkeypatch):
    """work/latents.safetensors is read back for the VAE that wrote it, and encoded again for any other."""
    vae, _ = train.train_vae(config(vae_steps=1, vae_full_steps=0), images, tmp_path, "cpu")
    mean, logvar = train.encode_dataset(vae, images, tmp_path, "cpu")
    with monkeypatch.context() as m:
        m.setattr(vae, "encode", lambda x: pytest.fail("encoded again for the same VAE"))
        cached = train.encode_dataset(vae, images, tmp_path, "cpu")
    assert torch.equal(cached[0], mean) and torch.equal(cached[1], logvar)
    with torch.no_grad():
        vae.quant_conv.bias[0] += 1.0  # another VAE: its first latent channel moves by 1
    mean2, _ = train.encode_dataset(vae, images, tmp_path, "cpu")
    assert torch.allclose(mean2[:, 0], mean[:, 0] + 1, atol=1e-5) and torch.equal(mean2[:, 1:], mean[:, 1:])
    assert torch.equal(train.encode_dataset(vae, images, tmp_path, "cpu")[0], mean2)  # and the cache is now its


def test_train_command_errors_are_one_line(tmp_path, capsys, one_thread):
    """A --set value of the wrong type, a stage that does not exist, and a state in --work trained with other
    settings each end the command with one line naming the problem and the way out."""
    with pytest.raises(SystemExit):
        train.main(["--set", "unet_steps=many"])
    assert "--set unet_steps=many: unet_steps takes int values like its default, unet_steps=4000" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--set", "stages=vae,unet,clasifier"])
    assert "no stage 'clasifier'; the stages are vae,unet,classifier" in capsys.readouterr().err
    small = ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--set", "n_train=16", "size=64",
             "vae_channels=32,32,32,32", "vae_crop=32", "vae_batch=4", "vae_steps=1", "vae_full_steps=1",
             "vae_full_batch=2", "stages=vae"]
    assert train.main(small) == 0
    capsys.readouterr()
    assert train.main([*small, "vae_lr=0.01"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "vae_lr 0.001, now 0.01" in err[0] and \
        "use another --work, or delete vae-state.pt there" in err[0]


def test_a_variant_of_the_recipe_may_not_replace_the_shipped_model(tmp_path, capsys, monkeypatch, one_thread):
    """A variant of the recipe is refused before anything runs, naming the changed fields as --set spells them,
    in the shipped folder (the default --out) and in the default --work (whose states the next default run would
    resume into weights/world); so is a partial run there, which would rewrite the card with its stages alone.
    save_every changes no weights and is allowed."""
    monkeypatch.setattr(train, "train_all", lambda *a: pytest.fail("a variant was trained into weights/world"))
    before = {p.name: p.stat().st_mtime_ns for p in train.SHIPPED.parent.iterdir()}
    own = str(tmp_path / "out")
    for argv, named in ((["--set", "unet_min_snr=0", "vae_channels=32,32,32,32", "save_every=10"],
                         "--set vae_channels=32,32,32,32 unet_min_snr=0.0 makes another model than the shipped "
                         "one (weights/world, from runs/world): name its own --out and --work"),
                        (["--out", own, "--set", "unet_steps=6000"], "--set unet_steps=6000 makes another model"),
                        (["--out", str(train.SHIPPED.parent), "--set", "stages=classifier"],
                         "--set stages=classifier would rewrite the shipped model's card")):
        with pytest.raises(SystemExit):
            train.main(argv)
        assert named in capsys.readouterr().err.strip().splitlines()[-1]
    assert {p.name: p.stat().st_mtime_ns for p in train.SHIPPED.parent.iterdir()} == before


def test_a_diverged_stage_stops_with_one_line(tmp_path, capsys, one_thread):
    """A loss that is not finite ends the stage before its step, naming the state file (kept as it was), and a
    --set value that is not finite is refused: neither reaches training.json, which is strict JSON."""
    stage = train.Stage("unet", tmp_path, torch.nn.Linear(2, 2), 1e-3, 0, 10, config())
    stage.save()
    saved = (tmp_path / "unet-state.pt").read_bytes()
    with pytest.raises(ValueError, match="unet-state.pt: the unet loss is nan at step 1, so training diverged"):
        stage.update(torch.tensor(float("nan")), 0.0)
    assert (tmp_path / "unet-state.pt").read_bytes() == saved and stage.step == 0
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path / "out"), "--work", str(tmp_path), "--set", "vae_lr=nan"])
    assert "--set vae_lr=nan: vae_lr must be a finite number" in capsys.readouterr().err


def test_a_stage_without_steps_writes_strict_json(tmp_path, capsys, one_thread):
    """A VAE stage of 0 steps has no final loss: training.json says null (it said NaN, which is not JSON) and the
    card says no step was taken; a crop phase alone gives the VAE its final loss."""
    small = ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--set", "n_train=16", "size=64",
             "vae_channels=32,32,32,32", "vae_crop=32", "vae_batch=4", "vae_full_batch=2", "stages=vae"]
    strict = dict(parse_constant=lambda name: pytest.fail(f"training.json holds {name}"))
    assert train.main([*small, "vae_steps=0", "vae_full_steps=0"]) == 0
    report = json.loads((tmp_path / "out" / "training.json").read_text(), **strict)
    assert report["vae"]["final_loss"] is None and report["vae"]["crop_phase"]["final_loss"] is None
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| vae result | 0 steps, 0.0 min of steps, no step taken |" in card and "nan" not in card
    assert train.main([*small[:1], str(tmp_path / "work2"), *small[2:], "vae_steps=2", "vae_full_steps=0"]) == 0
    report = json.loads((tmp_path / "out" / "training.json").read_text(), **strict)
    assert report["vae"]["final_loss"] == report["vae"]["crop_phase"]["final_loss"] > 0
    capsys.readouterr()


def test_latent_rescale_is_exact_and_unit_variance(images, tmp_path, one_thread):
    vae, _ = train.train_vae(config(vae_steps=3), images, tmp_path, "cpu")
    x = train.to_tensor(images[:16], "cpu")
    with torch.no_grad():
        mean, logvar = vae.encode(x)
        before = vae.decode(mean)
        k = train.scale_latents(vae, images, "cpu", n=64)
        mean2, logvar2 = vae.encode(x)
        after = vae.decode(mean2)
    assert torch.allclose(mean2, k * mean, rtol=1e-4, atol=1e-5)
    assert torch.allclose(logvar2, (logvar + 2 * np.log(k)).clamp(-30, 20), atol=1e-4)
    assert torch.allclose(after, before, atol=1e-4)
    with torch.no_grad():
        all_mean, _ = vae.encode(train.to_tensor(images, "cpu"))
    assert (LATENT_SCALE * all_mean).std().item() == pytest.approx(1.0, rel=1e-3)


def test_checkpoint_is_an_ordinary_sd_file(images, tmp_path, one_thread):
    cfg = config(vae_steps=1)
    vae, _ = train.train_vae(cfg, images, tmp_path, "cpu")
    unet = train.UNet(cfg.unet_config()).eval()
    text = train.frozen_text_encoder(cfg, "cpu")
    path = train.write_checkpoint(tmp_path / "baby.safetensors", cfg, unet, vae, text, {"world": {"steps": 1}})
    sd = load_sd(path)
    assert sd.family == "sd1" and sd.prediction_type == "epsilon"
    assert sd.unet.config == cfg.unet_config() and sd.vae.config == cfg.vae_config()
    x_t, c = torch.randn(1, 4, 16, 16), text(torch.zeros(1, 77, dtype=torch.long)).last_hidden_state
    with torch.no_grad():
        ours, stored = unet(x_t, 500, c), sd.unet(x_t, 500, sd.text_encoder(torch.zeros(1, 77, dtype=torch.long))
                                                  .last_hidden_state)
    assert torch.allclose(ours, stored, atol=2e-2)  # fp16 storage
    assert (ours - stored).abs().max() > 0  # it was stored as fp16, not kept in memory
    # The heads (32 channels each, not SD 1.x's 8 per layer) are not in the tensors: the .yaml beside says them.
    assert sd.unet.config.head_dim == cfg.unet_head_dim and sd.unet.config.num_heads is None
    path.with_suffix(".yaml").unlink()
    eight_heads = load_sd(path)
    assert eight_heads.unet.config.num_heads == 8
    with torch.no_grad():
        assert (eight_heads.unet(x_t, 500, c) - sd.unet(x_t, 500, c)).abs().max() > 1e-3


def test_learning_rate_warms_up_and_decays():
    assert train.learning_rate(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert train.learning_rate(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert train.learning_rate(100, 100, 1.0, 10) == pytest.approx(0.1)
    assert train.learning_rate(55, 100, 1.0, 10) == pytest.approx(0.55)


def test_min_snr_weight_by_hand():
    """min(SNR, gamma) / SNR, SNR = a / (1 - a): a = 0.9 -> SNR 9 -> 5/9; a = 0.5 -> SNR 1 -> 1; a = 0.1 -> 1."""
    alpha_bar = torch.tensor([0.9, 0.5, 0.1, 0.999], dtype=torch.float64)
    assert torch.allclose(train.min_snr_weight(alpha_bar, 5.0), torch.tensor([5 / 9, 1.0, 1.0, 5 * 0.001 / 0.999],
                                                                                dtype=torch.float64))
    assert torch.equal(train.min_snr_weight(alpha_bar, 0.0), torch.ones(4, dtype=torch.float64))


def test_object_weights_by_hand():
    """Mean 1 per image; a cell inside the object weighs unet_object_weight times a cell far from it; 1 = uniform."""
    config = train.TrainConfig(n_train=4, unet_object_weight=5.0)
    w = train.object_weights(config, 16)  # (4, 1, 16, 16)
    assert w.shape == (4, 1, 16, 16)
    assert torch.allclose(w.mean(dim=(1, 2, 3)), torch.ones(4, dtype=w.dtype))
    for i in range(4):
        scene = scenes.sample_scene(i)
        centre = w[i, 0, int(scene.cy * 16), int(scene.cx * 16)]  # a circumradius >= 0.13 covers its own cell
        far = w[i, 0, 0 if scene.cy > 0.5 else 15, 0 if scene.cx > 0.5 else 15]  # the opposite corner
        assert centre / far == pytest.approx(5.0)
    assert torch.equal(train.object_weights(dataclasses.replace(config, unet_object_weight=1.0), 16),
                       torch.ones(4, 1, 16, 16, dtype=w.dtype))
