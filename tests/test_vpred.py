"""v-prediction and zero terminal SNR (NoobAI-XL v-pred and kin), as sd-scripts trains them.

What the model states (a folder's scheduler config, a checkpoint's ComfyUI markers ``v_pred`` and
``ztsnr``) is read through the family module; the job's ``v_parameterization`` and
``zero_terminal_snr`` override it; training, previews and the file's metadata follow.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors import safe_open
from safetensors.torch import save_file

from trainer import noise, render
from trainer.families import get_family
from trainer.families.prediction import Prediction
from trainer.models import base_model_from_pipeline, detect_family, load_pipeline, prediction_config
from trainer.tiny import make_scheduler

from .conftest import base_job, train_in_process

#: A tensor name that marks an SDXL (or an SD1.5) single-file checkpoint.
MARKS = {"sdxl": "conditioner.embedders.1.model.ln_final.weight", "sd15": "cond_stage_model.transformer.x"}
VPRED_SCHEDULE = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True}


def _checkpoint(path: Path, family: str = "sdxl", *markers: str, metadata: dict | None = None) -> str:
    """A header-only stand-in for a single-file checkpoint: the family's mark plus ``markers``,
    saved as ComfyUI saves them (empty tensors)."""
    tensors = {MARKS[family]: torch.zeros(2), **{m: torch.tensor([]) for m in markers}}
    save_file(tensors, str(path), metadata=metadata)
    return str(path)


@pytest.fixture(scope="module")
def vpred_sdxl(tiny_sdxl, tmp_path_factory) -> Path:
    """The tiny SDXL as a diffusers folder whose scheduler config says v-prediction + zero terminal SNR."""
    folder = tmp_path_factory.mktemp("models") / "tiny-sdxl-vpred"
    folder.mkdir()
    for part in tiny_sdxl.iterdir():
        if part.name != "scheduler":
            os.symlink(part, folder / part.name)
    config = json.loads((tiny_sdxl / "scheduler" / "scheduler_config.json").read_text())
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, **VPRED_SCHEDULE}))
    return folder


# What the model states -----------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sdxl", "sd15"])
def test_checkpoint_markers_state_v_prediction_and_zero_terminal_snr(family, tmp_path):
    fam = get_family(family)
    both = _checkpoint(tmp_path / "noob.safetensors", family, "v_pred", "ztsnr")
    assert detect_family(both) == family  # the markers change nothing of the family's detection
    assert fam.read_prediction(both) == Prediction(v_prediction=True, zero_terminal_snr=True)
    assert fam.read_prediction(_checkpoint(tmp_path / "v.safetensors", family, "v_pred")) == Prediction(True)
    assert fam.read_prediction(_checkpoint(tmp_path / "eps.safetensors", family)) == Prediction()
    # a checkpoint sd-scripts saved states v-prediction in its SAI model spec
    spec = _checkpoint(tmp_path / "spec.safetensors", family, metadata={"modelspec.prediction_type": "v"})
    assert fam.read_prediction(spec) == Prediction(v_prediction=True)
    assert fam.read_prediction("someone/hub-model") == Prediction()  # the loaded config is all there is


def test_a_diffusers_folder_states_it_in_its_scheduler_config(vpred_sdxl, tiny_sdxl):
    assert get_family("sdxl").read_prediction(str(vpred_sdxl)) == Prediction(True, True)
    assert get_family("sdxl").read_prediction(str(tiny_sdxl)) == Prediction()


def test_loading_gives_the_stated_schedule_to_training_and_rendering(vpred_sdxl, tiny_sdxl, tmp_path):
    pipe, family = load_pipeline(str(vpred_sdxl))
    model = base_model_from_pipeline(pipe, family, str(vpred_sdxl))
    assert model.prediction_type == "v_prediction" and model.zero_terminal_snr
    # a single-file checkpoint's markers: the same pipeline, read as if loaded from such a file
    plain, _ = load_pipeline(str(tiny_sdxl))
    marked = _checkpoint(tmp_path / "noob.safetensors", "sdxl", "v_pred", "ztsnr")
    model = base_model_from_pipeline(plain, "sdxl", marked)
    assert model.prediction_type == "v_prediction" and model.zero_terminal_snr
    assert model.scheduler_config["timestep_spacing"] == "trailing"  # sampling starts at the last step
    sampler = render.make_sampler("euler_a", model.scheduler_config)
    assert sampler.config.prediction_type == "v_prediction" and sampler.config.rescale_betas_zero_snr
    assert base_model_from_pipeline(plain, "sdxl", str(tiny_sdxl)).prediction_type == "epsilon"


# The job's options ------------------------------------------------------------------------------


def test_the_jobs_options_override_the_model():
    eps = dict(make_scheduler().config)
    vpred = prediction_config(eps, True, True)
    assert (vpred["prediction_type"], vpred["rescale_betas_zero_snr"]) == ("v_prediction", True)
    assert prediction_config(vpred, None, None) == vpred  # None: what the model says
    back = prediction_config(vpred, False, False)
    assert (back["prediction_type"], back["rescale_betas_zero_snr"]) == ("epsilon", False)
    # diffusers' from_config drops keys listed as defaults: what was set must reach the scheduler
    assert "rescale_betas_zero_snr" in eps["_use_default_values"]
    scheduler = DDPMScheduler.from_config(vpred)
    assert scheduler.config.rescale_betas_zero_snr and scheduler.alphas_cumprod[-1] == 0.0
    assert DDPMScheduler.from_config(back).alphas_cumprod[-1] > 0.0


def test_prepare_applies_the_override(vpred_sdxl, dataset, tmp_path):
    from trainer.contract import TrainJob
    from trainer.train import prepare

    job = base_job(vpred_sdxl, dataset, tmp_path / "out", v_parameterization=False, zero_terminal_snr=False)
    run = prepare(TrainJob.model_validate(job))
    assert run.model.prediction_type == "epsilon" and not run.model.zero_terminal_snr
    assert run.noise_scheduler.config.prediction_type == "epsilon"
    assert run.noise_scheduler.alphas_cumprod[-1] > 0.0
    # a preview sampler that cannot sample the job's schedule fails before any training
    job.update(zero_terminal_snr=True, previews=True, preview_sampler="pndm")
    with pytest.raises(render.SamplerError, match="pndm cannot sample"):
        prepare(TrainJob.model_validate(job))


# Loss weights and samplers at SNR 0 ----------------------------------------------------------


def test_min_snr_weights_are_finite_at_zero_terminal_snr():
    scheduler = DDPMScheduler.from_config(prediction_config(dict(make_scheduler().config), True, True))
    t = torch.tensor([0, 500, 999])
    v = noise.min_snr_weights(t, scheduler, 5.0, v_prediction=True)
    eps = noise.min_snr_weights(t, scheduler, 5.0, v_prediction=False)
    assert torch.isfinite(v).all() and torch.isfinite(eps).all()
    assert v[2] == 0.0 and eps[2] == 1.0  # min(0, 5) / (0 + 1), and the limit of min(s, 5) / s
    pred, target = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    loss = noise.diffusion_loss(pred, target, t, scheduler, min_snr_gamma=5.0, v_prediction=True)
    assert math.isfinite(loss.item())


def test_a_sampler_without_rescaled_betas_is_refused():
    config = prediction_config(dict(make_scheduler().config), True, True)
    with pytest.raises(render.SamplerError, match="pndm cannot sample a zero-terminal-SNR model: use one of"):
        render.make_sampler("pndm", config)
    render.check_sampler("pndm", prediction_config(config, None, False))  # fine without the rescale


def test_model_versions_as_sd_scripts_writes_them():
    assert get_family("sd15").model_version(True) == "sd_v1_v"
    assert get_family("sd15").model_version(False) == "sd_v1"
    assert get_family("sdxl").model_version(True) == "sdxl_base_v1-0"


# Training ---------------------------------------------------------------------------------------


def test_trains_v_prediction_with_zero_terminal_snr(tiny_sdxl, dataset, tmp_path, monkeypatch):
    noised, losses = [], []
    add_noise, diffusion_loss = DDPMScheduler.add_noise, noise.diffusion_loss

    def record_noise(self, latents, noise_, timesteps):
        noised.append((latents.detach().clone(), noise_.detach().clone(), timesteps.clone()))
        return add_noise(self, latents, noise_, timesteps)

    def record_loss(pred, target, timesteps, scheduler, **kwargs):
        losses.append((target.detach().clone(), kwargs["v_prediction"]))
        return diffusion_loss(pred, target, timesteps, scheduler, **kwargs)

    monkeypatch.setattr(DDPMScheduler, "add_noise", record_noise)
    monkeypatch.setattr(noise, "diffusion_loss", record_loss)
    job = base_job(
        tiny_sdxl, dataset, tmp_path / "out", v_parameterization=True, zero_terminal_snr=True,
        min_snr_gamma=5.0, previews=True, preview_weights=[1.0],
    )  # fmt: skip
    events, code = train_in_process(job)
    assert code == 0, events[-1]
    steps = [e for e in events if e["event"] == "step"]
    assert steps and all(math.isfinite(e["loss"]) for e in steps)
    assert any(e["event"] == "preview_ready" for e in events)  # rendered on the same schedule

    # The target is the velocity sqrt(a) * noise - sqrt(1 - a) * x0 on the rescaled schedule.
    a = DDPMScheduler(  # sd-scripts' schedule, built here on its own
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", rescale_betas_zero_snr=True
    ).alphas_cumprod
    assert a[-1] == 0.0 and len(noised) == len(losses) > 0
    for (latents, noise_, t), (target, v_prediction) in zip(noised, losses, strict=True):
        at = a[t].view(-1, 1, 1, 1)
        assert v_prediction
        torch.testing.assert_close(target, at.sqrt() * noise_ - (1 - at).sqrt() * latents)

    with safe_open(str(tmp_path / "out" / "test.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["modelspec.prediction_type"] == "v" and meta["ss_zero_terminal_snr"] == "True"
    assert meta["ss_v2"] == "False" and meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["ss_min_snr_gamma"] == "5.0"
