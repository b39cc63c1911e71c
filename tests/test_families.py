"""The family table is the one place a model family is named: a fake fourth family needs only a
module and a row; options a family does not take are refused before anything is charged."""

from __future__ import annotations

import ast
import asyncio
import json
import sys
import types
from pathlib import Path

import pytest

from bot.queue.costs import generation_cost, training_cost
from bot.registry import ModelRegistry
from bot.settings import SettingsError, load_settings
from trainer.contract import JobError, TrainJob, parse_job
from trainer.contract import families as table
from trainer.contract.families import FamilyInfo, refused_options

ROOT = Path(__file__).resolve().parents[1]
FAKE = FamilyInfo("fake", "Fake-1", 768, None, step_cost=0.5, image_cost=3, steps_per_s=0.5)


@pytest.fixture
def fake_family(monkeypatch):
    """A fourth family: its row, and its module (an SD1.5 look-alike with its own key)."""
    from trainer.families.sd15 import SD15

    class Fake(SD15):
        key = "fake"

        def matches_index(self, model_index):
            return model_index.get("_class_name") == "FakePipeline"

    module = types.ModuleType("trainer.families.fake")
    module.FAMILY = Fake()
    monkeypatch.setitem(sys.modules, "trainer.families.fake", module)
    monkeypatch.setitem(table.FAMILIES, "fake", FAKE)
    return FAKE


def test_a_fourth_family_is_a_module_and_a_row(fake_family, tmp_path):
    from trainer.families import get_family
    from trainer.models import detect_family

    assert get_family("fake").info is fake_family
    job = parse_job({"dataset_dir": "d", "output_dir": "o", "base_model": "m", "model_family": "fake"})
    assert job.resolved_resolution("fake") == 768 and job.resolved_clip_skip("fake") is None
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FakePipeline"}))
    assert detect_family(str(tmp_path)) == "fake"
    settings = load_settings(data_dir=tmp_path / "data")
    assert settings.step_cost("fake") == 0.5 and settings.image_cost("fake") == 3
    assert training_cost(100, 1, 512, "fake", {"fake": settings.step_cost("fake")}) == 50
    assert generation_cost(2, 768, 768, "fake", {"fake": 3}) == 6
    registry = ModelRegistry.load(None, tmp_path / "data")
    assert registry.get("tiny-fake").family == "fake" and "Fake-1" in registry.get("tiny-fake").label


def test_an_unknown_family_is_refused_with_the_known_ones():
    with pytest.raises(JobError, match="unknown model family 'flux2'.*sd15, sdxl"):
        parse_job({"dataset_dir": "d", "output_dir": "o", "base_model": "m", "model_family": "flux2"})


def test_options_a_family_does_not_take_are_refused_naming_it(fake_family):
    given = TrainJob.model_validate(
        {"dataset_dir": "d", "output_dir": "o", "base_model": "m", "clip_skip": 2, "block_dims": [4] * 25}
    ).changed_options()
    assert refused_options("fake", given) == [
        "block_dims does not apply to Fake-1: leave it out",
        "clip_skip does not apply to Fake-1: leave it out",
    ]
    assert refused_options("sd15", given) == []


def test_the_bot_refuses_them_before_charging(fake_family, tmp_path):
    from bot.queue.service import QueueError
    from bot.services import open_services
    from tests.queue_helpers import make_dataset, queue_settings

    settings = queue_settings(tmp_path, {"tiny-sd15": tmp_path / "unused"})
    registry = tmp_path / "models.toml"
    registry.write_text(registry.read_text() + f'[models.fake]\nsource = "{tmp_path}"\nfamily = "fake"\n')

    async def go():
        async with open_services(settings) as s:
            await make_dataset(s, base="fake")
            before = (await s.stamina.balance(1)).balance
            with pytest.raises(QueueError, match="clip_skip does not apply to Fake-1"):
                await s.queue.submit_training(1, "chara", {"clip_skip": 2})
            assert (await s.stamina.balance(1)).balance == before

    asyncio.run(go())


def test_per_family_rates_are_settings_and_the_old_names_are_refused(tmp_path, monkeypatch):
    settings = load_settings(data_dir=tmp_path, step_costs={"sdxl": 0.3})
    assert settings.step_cost("sdxl") == 0.3 and settings.step_cost("sd15") == 0.1
    with pytest.raises(SettingsError, match="'flux2' is not a model family"):
        load_settings(data_dir=tmp_path, step_costs={"flux2": 1})
    monkeypatch.setenv("LORABOT_STEP_COST_SDXL", "0.3")
    with pytest.raises(
        SettingsError, match="LORABOT_STEP_COST_SDXL is now LORABOT_STEP_COSTS='{\"sdxl\": ...}'"
    ):
        load_settings(data_dir=tmp_path)


def test_no_family_is_named_outside_the_table_and_its_modules():
    """A family key as a string constant in code (not in docs or examples) appears only in the
    table, the family modules and the block layouts the rows point to."""
    allowed = {"trainer/contract/families.py", "trainer/contract/blocks.py"}
    found = []
    for part in ("bot", "trainer", "db"):
        for path in sorted((ROOT / part).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in allowed or rel.startswith("trainer/families/"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in table.FAMILIES:
                    found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert found == []


def test_a_generation_with_the_family_defaults_is_timed_in_the_queue(tmp_path):
    """/generate without steps stores none: the queue's ETA takes the family's default steps."""
    from bot.queue.generation import GenerateRequest
    from bot.queue.status import queue_status
    from bot.services import open_services
    from tests.queue_helpers import queue_settings

    settings = queue_settings(tmp_path, {"tiny-sd15": tmp_path / "no-model-needed"})

    async def go():
        async with open_services(settings) as s:
            job = await s.generation.submit(1, GenerateRequest("tkchar", base_model="tiny-sd15", size="64"))
            assert job.spec["options"]["steps"] is None
            (status,) = await queue_status(s.queue, 1)
            assert status.job.id == job.id and status.ends_in_s > 0

    asyncio.run(go())
