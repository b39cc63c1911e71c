"""The job/event contract: validation messages, resolved defaults, step counts, events."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainer.contract import (
    SCHEMA_VERSION,
    GenerateJob,
    JobError,
    TrainJob,
    load_job,
    make_event,
    parse_event,
    parse_job,
    total_steps,
    warmup_steps,
)

BASE = {"dataset_dir": "d", "base_model": "m", "output_dir": "o"}


def problems(**options) -> list[str]:
    with pytest.raises(JobError) as info:
        parse_job({**BASE, **options})
    return info.value.problems


def test_contract_imports_no_torch():
    code = "import sys, trainer.contract; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_total_steps_is_the_guides_rule():
    assert total_steps(7, 10, 1, 10) == 700  # the guide's job
    assert total_steps(7, 10, 3, 10) == 240  # ceil(70 / 3) = 24 per epoch
    assert total_steps(1, 1, 4, 2) == 2
    assert warmup_steps(1000, 10) == 100
    assert warmup_steps(20, 20) == 4 and warmup_steps(33, 10) == 3  # truncated like sd-scripts


def test_defaults_follow_the_spec():
    job = parse_job(dict(BASE))
    assert (job.repeats, job.epochs, job.batch_size, job.network_dim, job.network_alpha) == (
        10,
        10,
        1,
        32,
        16,
    )
    assert job.lr_scheduler == "cosine_with_restarts" and job.save_precision == "fp16"
    assert job.resolved_learning_rate() == 1e-4
    assert job.resolved_clip_skip("sd15") == 2 and job.resolved_clip_skip("sdxl") == 1
    assert job.shuffle_tags and job.keep_tokens == 1 and job.previews
    assert job.preview_weights == [0.7, 0.8, 1.0]


def test_unknown_option_is_an_error_with_a_suggestion():
    assert problems(learning_rat=1e-4) == ["unknown option 'learning_rat' (did you mean 'learning_rate'?)"]


def test_out_of_range_and_wrong_choice():
    lines = problems(repeats=0, lr_scheduler="cosine_annealing", network_dim=5000)
    assert any(line.startswith("repeats:") for line in lines)
    assert any(line.startswith("lr_scheduler:") for line in lines)
    assert any(line.startswith("network_dim:") for line in lines)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"unet_only": True, "text_encoder_only": True}, "exclude each other"),
        ({"lr_scheduler": "constant", "lr_warmup_percent": 10}, "takes no warmup"),
        ({"optimizer": "Prodigy", "learning_rate": 1e-4}, "wants learning_rate = 1.0"),
        ({"optimizer": "DAdaptAdam", "unet_lr": 0.5}, "wants unet_lr = 1.0"),
        ({"text_encoder_only": True, "unet_lr": 1e-4}, "unet_lr would be ignored"),
        ({"unet_only": True, "text_encoder_lr": 1e-4}, "text_encoder_lr would be ignored"),
        ({"unet_lr": 0, "text_encoder_lr": 0}, "nothing would be trained"),
        ({"epochs": 2, "save_every_n_epochs": 3}, "only the last epoch"),
    ],
)
def test_incompatible_pairs(options, fragment):
    assert any(fragment in line for line in problems(**options))


def test_adaptive_optimizers_default_to_lr_one():
    job = parse_job({**BASE, "optimizer": "DAdaptation"})
    assert job.resolved_learning_rate() == 1.0 and job.resolved_unet_lr() == 1.0


def test_unet_and_text_encoder_lr_override_learning_rate():
    job = parse_job({**BASE, "learning_rate": 1e-4, "unet_lr": 3e-4, "text_encoder_lr": 5e-5})
    assert job.resolved_unet_lr() == 3e-4 and job.resolved_text_encoder_lr() == 5e-5
    only = parse_job({**BASE, "unet_only": True})
    assert only.resolved_text_encoder_lr() == 0 and not only.trains_text_encoder()
    te_zero = parse_job({**BASE, "text_encoder_lr": 0})
    assert not te_zero.trains_text_encoder() and te_zero.trains_unet()


def test_output_name_and_resolution_checks():
    assert any("output_name" in p for p in problems(output_name="../evil"))
    assert any("multiple of 64" in p for p in problems(resolution=500))


def test_newer_schema_is_refused():
    assert any("newer" in p for p in problems(schema=SCHEMA_VERSION + 1))


def test_toml_and_json_job_files(tmp_path):
    toml = tmp_path / "job.toml"
    toml.write_text('dataset_dir = "d"\nbase_model = "m"\noutput_dir = "o"\nepochs = 3\n')
    assert load_job(toml).epochs == 3
    js = tmp_path / "job.json"
    js.write_text(json.dumps({**BASE, "epochs": 4}))
    assert load_job(js).epochs == 4
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3")
    with pytest.raises(JobError, match="not valid TOML"):
        load_job(bad)
    with pytest.raises(JobError, match="cannot read"):
        load_job(tmp_path / "missing.toml")
    latin = tmp_path / "latin.toml"
    latin.write_bytes('output_name = "caf\xe9"'.encode("latin-1"))
    with pytest.raises(JobError, match="not UTF-8"):
        load_job(latin)


def test_generate_job_rules():
    gen = {"base_model": "m", "output_dir": "o", "prompt": "p"}
    parsed = GenerateJob.model_validate(gen)
    assert parsed.resolved_steps("sd15") == 25 and parsed.resolved_size("sd15") == (512, 512)
    assert (parsed.resolved_steps("flux"), parsed.resolved_cfg("flux"), parsed.resolved_cfg("sdxl")) == (
        20,
        3.5,
        7.0,
    )
    assert parsed.resolved_size("sdxl") == (1024, 1024)
    with pytest.raises(JobError, match="compare_weights needs a LoRA"):
        parse_job({**gen, "compare_weights": [0.7, 1.0]}, GenerateJob)
    with pytest.raises(JobError, match="multiple of 8"):
        parse_job({**gen, "width": 100}, GenerateJob)


def test_events_round_trip():
    event = make_event("step", step=3, total_steps=10, epoch=1, loss=0.1, lr=1e-4)
    assert event["schema"] == SCHEMA_VERSION and isinstance(event["time"], float)
    assert parse_event(json.dumps(event)) == event
    assert parse_event("some log line") is None
    assert parse_event('{"event": "step"}') is None  # required fields missing
    with pytest.raises(ValueError):
        make_event("failed")
    assert isinstance(TrainJob.model_fields, dict)
