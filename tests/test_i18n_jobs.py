"""Training, epochs, generation, the LoRA library and presets in the member's language: a member whose
Discord is in Japanese walks /preset save, /train (estimate and Start), /epochs (Download, Save),
/generate and /lora list and reads Japanese in every answer, button, form and refusal; a member in
English reads what the bot always said. The real discord.py client through the loopback stand-in;
tests/fake_trainer.py trains and renders at once."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from bot.i18n import messages
from bot.queue.option_help import help_fields, help_text
from bot.queue.options import OptionsError, parse_option_lines
from bot.queue.refunds import RefundPreview
from bot.ui.common import friendly_error
from bot.ui.persistent import cancel_action_button, epoch_buttons, refund_text
from tests.bot_harness import World, bot_world, first_id, progress_message
from tests.queue_helpers import make_dataset, queue_settings
from tests.test_dispatcher import finished

ROOT = Path(__file__).resolve().parents[1]
FAKE = [sys.executable, str(ROOT / "tests" / "fake_trainer.py")]
#: The fake trainer never opens a model, and a registry entry with a family is not looked at on disk.
MODELS = {"tiny-sd15": Path("/nonexistent/tiny-sd15")}
FAST = "mixed_precision=no, optimizer=AdamW, network_dim=4, network_alpha=2, repeats=1, resolution=64"
JA = "ja"
KANA = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")  # hiragana, katakana, kanji


def japanese(text: str) -> bool:
    return bool(KANA.search(text or ""))


def labels(message) -> list[str]:
    return [c.get("label") or "" for row in message.components for c in row.get("components", [])]


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINER_MODE", "stream")
    monkeypatch.setenv("FAKE_TRAINER_STEPS", "3")
    monkeypatch.setenv("FAKE_TRAINER_SECONDS", "0.3")
    return queue_settings(tmp_path, MODELS, command_cooldown_s=0)


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 150))


async def _train_in_japanese(w: World) -> int:
    saved = await w.reply(await w.slash(w.alice, "preset save", {"name": "fast", "options": FAST}, locale=JA))
    assert "プリセット **fast** を保存しました" in saved.content, saved.content
    await make_dataset(w.services, owner=w.alice.user_id, images=3)
    estimate = await w.reply(
        await w.slash(w.alice, "train", {"dataset": "chara", "preset": "fast", "epochs": 1}, locale=JA)
    )
    embed = estimate.embeds[0]
    assert embed["title"] == "「chara」でLoRAを学習", embed
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert "画像 3 枚 × リピート数 1 ÷ バッチサイズ 1 = 1エポックあたり 3 ステップ" in fields["ステップ数"], (
        fields
    )
    assert "× エポック数 1 = **3 ステップ**" in fields["ステップ数"]
    cost = int(re.search(r"^\*\*(\d+)\*\*\(所持 150、学習後の残り \d+\)$", fields["消費スタミナ"]).group(1))
    assert fields["所要時間"].startswith("開始から約") and "ベースモデル" in fields
    assert embed["footer"]["text"] == "「開始」を押すまでスタミナは消費されません。"
    assert {f"開始(スタミナ {cost})", "詳細設定…", "キャンセル"} <= set(labels(estimate)), labels(estimate)
    form = await w.click(estimate, w.alice, first_id(estimate, label="詳細設定"), locale=JA)
    assert form.modal["title"] == "学習の詳細設定", form.modal
    await w.click(estimate, w.alice, first_id(estimate, label="開始"), locale=JA)
    await w.server.wait_for_message(lambda m: m is estimate and "キューに追加しました" in m.content, 30)
    assert f"ステップ、スタミナ {cost}。" in estimate.content, estimate.content
    job_id = int(re.search(r"ジョブ #(\d+)", estimate.content).group(1))
    job = await finished(w.services.conn, job_id)
    assert job.state == "done", job.error
    return job_id


async def _epochs_in_japanese(w: World, job_id: int) -> str:
    pager = await w.reply(await w.slash(w.alice, "epochs", {"job": str(job_id)}, locale=JA))
    embed = pager.embeds[0]
    assert f"ジョブ #{job_id}" in embed["title"] and "エポック 1(保存済み 1/1)" in embed["title"], embed
    assert embed["description"] == "ステップ 3/3 · 状態: 完了", embed
    assert embed["footer"]["text"].startswith("ダウンロード:"), embed
    assert {"エポック1をダウンロード", "エポック1を保存", "エポック1から追加学習", "比較…"} <= set(
        labels(pager)
    ), labels(pager)
    download = await w.reply(
        await w.click(pager, w.alice, first_id(pager, label="エポック1をダウンロード"), locale=JA)
    )
    (lora,) = download.files
    assert lora.filename.endswith("-e01.safetensors") and download.content.endswith(" MB)"), download.content
    further = await w.click(pager, w.alice, first_id(pager, label="エポック1から追加学習"), locale=JA)
    assert further.modal["title"] == "追加学習", further.modal
    save = await w.click(pager, w.alice, first_id(pager, label="エポック1を保存"), locale=JA)
    assert save.modal["title"] == "LoRAライブラリに保存", save.modal
    submit = await w.server.send_modal_submit(save, w.alice, {}, locale=JA)
    await submit.wait_response(timeout=30)
    saved = await w.reply(submit)
    assert f"ジョブ #{job_id} のエポック 1 を" in saved.content and "として保存しました" in saved.content, (
        saved.content
    )
    (row,) = await w.services.library.list(w.alice.user_id)
    return row.name


async def _generate_and_list_in_japanese(w: World, name: str) -> None:
    options = {"prompt": "tkchar", "lora": name, "weight": 0.8, "steps": 2, "size": "64"}
    queued = await w.reply(await w.slash(w.alice, "generate", options, locale=JA))
    assert "をキューに追加しました: 1 枚、スタミナ" in queued.content, queued.content
    job = await finished(w.services.conn, int(re.search(r"#(\d+)", queued.content).group(1)))
    assert job.state == "done", job.error
    listing = await w.reply(await w.slash(w.alice, "lora list", locale=JA))
    embed = listing.embeds[0]
    assert embed["title"] == "📚 自分のLoRA" and name in embed["description"], embed
    assert "トリガー" in embed["description"] and "学習元" in embed["description"]
    assert embed["footer"]["text"].startswith("/generate lora:<名前> で使えます")


async def _refusals_in_japanese(w: World, name: str) -> None:
    for command, options, said in [
        ("generate", {"prompt": "tk", "lora": name, "weight2": 0.5},
         "❌ weight2 が指定されていますが、lora2 が空です。lora2 でLoRAを選ぶか、weight2 を外してください"),
        ("generate", {"prompt": "tk", "lora": "nope"}, "❌ 「nope」という名前のLoRAは、自分のものにも共有されているものにもありません"),
        ("generate", {"prompt": "tk", "lora": name, "size": "65"}, "❌ サイズは一辺 64〜2048 ピクセルの 8 の倍数"),
        ("preset save", {"name": "bad", "options": "epoch=3, optimizer=adamw9"},
         "❌ オプション「epoch」はありません(「epochs」のことですか?); optimizer: 「adamw9」は指定できません"),
        ("lora rename", {"name": "nope", "new_name": "x"}, "❌ 「nope」という名前のLoRAはありません(/lora list で確認できます)"),
        ("train", {"dataset": "chara", "continue_job": "1"}, "❌ 追加学習には continue_job と continue_epoch の両方が必要です"),
    ]:  # fmt: skip
        reply = await w.reply(await w.slash(w.alice, command, options, locale=JA))
        assert reply.ephemeral and reply.content.startswith(said), (command, reply.content)


async def _english(w: World) -> None:
    await make_dataset(w.services, owner=w.bob.user_id, images=3)
    estimate = await w.reply(await w.slash(w.bob, "train", {"dataset": "chara", "epochs": 1}, locale="en-US"))
    embed = estimate.embeds[0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert (
        embed["title"] == "Train a LoRA on 'chara'"
        and "3 images × 10 repeats ÷ batch 1 = 30 steps per epoch" in fields["Steps"]
    )
    assert re.search(r"\*\*\d+\*\* stamina \(you have 150, \d+ after\)", fields["Cost"]), fields
    assert embed["footer"]["text"] == "Nothing is charged until you press Start."
    assert any(label.startswith("Start (") for label in labels(estimate)) and "Advanced…" in labels(estimate)
    await w.click(estimate, w.bob, first_id(estimate, label="Cancel"), locale="en-US")
    await w.server.wait_for_message(
        lambda m: m is estimate and m.content == "Not started: nothing was charged.", 10
    )
    listing = await w.reply(await w.slash(w.bob, "lora list", locale="en-US"))
    assert listing.content == "Your library is empty: save an epoch from `/epochs`."
    refused = await w.reply(
        await w.slash(w.bob, "generate", {"prompt": "tk", "lora": "nope"}, locale="en-US")
    )
    assert refused.content.startswith("❌ you have no LoRA named 'nope' and none is shared under that name")
    assert not any(japanese(x) for x in (estimate.content, str(embed), listing.content, refused.content))


def test_training_epochs_generation_and_the_library_in_japanese_and_in_english(settings):
    async def scenario():
        async with bot_world(settings, queue=True, trainer_command=FAKE) as w:
            job_id = await _train_in_japanese(w)
            name = await _epochs_in_japanese(w, job_id)
            await _generate_and_list_in_japanese(w, name)
            await _refusals_in_japanese(w, name)
            await _english(w)

    run(scenario())


def test_the_cancel_prompt_buttons_and_option_help_in_both_languages():
    ja, en = messages("ja"), messages("en")
    running = RefundPreview(7, "train", "running", 3, 10, 20, 14, 0)
    assert refund_text(running, en) == (
        "It is at 3/10 steps: the steps not done are refunded (about 14 stamina now); saved epochs stay."
    )
    assert refund_text(running, ja) == (
        "3/10 ステップまで進んでいます。残りのステップ分が返還されます(今なら約 14 スタミナ)。保存済みのエポックは残ります。"
    )
    expired = RefundPreview(7, "generate", "queued", 0, 2, 6, 0, 6)
    assert refund_text(expired).startswith("It has not started: nothing comes back (6 stamina expired: ")
    assert refund_text(expired, ja).startswith(
        "まだ始まっていません。戻るスタミナはありません(スタミナ 6 は失効しました"
    )
    assert [b.item.label for b in epoch_buttons(7, 2, ja)] == ["エポック2をダウンロード", "エポック2を保存"]
    assert [b.item.label for b in epoch_buttons(7, 2)] == ["Download e2", "Save e2"]
    assert (
        cancel_action_button(7, ja).label == "#7 をキャンセル"
        and cancel_action_button(7).label == "Cancel #7"
    )
    with pytest.raises(OptionsError) as info:
        parse_option_lines("epochs=many, shuffle_tags=maybe")
    assert str(info.value) == (
        "epochs: 'many' is not a whole number (e.g. 12); shuffle_tags: 'maybe' is not yes or no "
        "(use yes/no, true/false or on/off)"
    )
    assert friendly_error(info.value, ja) == (
        "❌ epochs: 「many」は整数ではありません(例: 12); shuffle_tags: 「maybe」は yes か no で指定してください"
        "(yes/no、true/false、on/off が使えます)"
    )
    assert "例: `optimizer=AdamW`" in help_text("optimizer", t=ja)
    assert help_fields(t=ja)[0][0] == "ステップ数"
    assert help_fields()[0][0] == "Steps"


def test_a_public_cancel_button_asks_in_the_clickers_language(settings):
    async def scenario():
        async with bot_world(settings) as w:  # no queue: the job waits, its progress message has Cancel
            await make_dataset(w.services, owner=w.alice.user_id, images=3)
            job = await w.services.queue.submit_training(w.alice.user_id, "chara", {"epochs": 1},
                                                         channel_id=w.channel.id)  # fmt: skip
            progress = await progress_message(w, job.id)
            ask = await w.reply(await w.click(progress, w.alice, f"lorabot:cancel:{job.id}", locale=JA))
            assert ask.content == (
                f"ジョブ #{job.id}(chara)を停止しますか? まだ始まっていません。スタミナ {job.cost} がすべて戻ります。"
            ), ask.content
            assert labels(ask) == ["停止する", "続ける"], labels(ask)
            await w.click(ask, w.alice, first_id(ask, label="停止する"), locale=JA)
            said = f"🛑 ジョブ #{job.id} を開始前にキャンセルしました: スタミナ {job.cost} を返還。"
            await w.server.wait_for_message(lambda m: m is ask and m.content == said, 10)
            again = await w.reply(await w.click(progress, w.bob, f"lorabot:cancel:{job.id}", locale="en-US"))
            assert again.content == f"❌ you have no job #{job.id} (see your jobs with /queue)", again.content

    run(scenario())
