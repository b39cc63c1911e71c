"""The WD14-style tagger: reference preprocessing, thresholds, batches, and clear errors, on the tiny model."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from PIL import Image

from trainer.tagger import Labels, Tagger, TaggerError, TagResult, results_from_scores
from trainer.tiny_tagger import make_tiny_tagger


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def solid(rgb, size=(32, 32)) -> Image.Image:
    return Image.new("RGB", size, rgb)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_tagger(tmp_path_factory.mktemp("tagger") / "tiny", input_size=64)


@pytest.fixture(scope="module")
def tagger(tiny_dir):
    return Tagger(tiny_dir, providers=["CPUExecutionProvider"])


# --- preprocessing --------------------------------------------------------------------------------


def test_preprocess_matches_reference_steps(tmp_path):
    tagger = Tagger(make_tiny_tagger(tmp_path / "t8", input_size=8))
    assert tagger.input_size == 8
    rgba = np.array(
        [
            [[200, 10, 30, 255], [0, 0, 0, 0], [40, 220, 90, 128]],
            [[5, 6, 7, 64], [250, 128, 1, 255], [90, 90, 255, 200]],
        ],
        dtype=np.uint8,
    )  # 2 rows x 3 columns
    # Independently: composite on white, pad the bottom row white (3x2 -> 3x3), bicubic to 8x8, BGR floats.
    alpha = rgba[..., 3:].astype(np.float64) / 255
    rgb = np.round(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    square = np.pad(rgb, ((0, 1), (0, 0), (0, 0)), constant_values=255)
    resized = np.asarray(Image.fromarray(square).resize((8, 8), Image.Resampling.BICUBIC))
    expected = resized[:, :, [2, 1, 0]].astype(np.float32)

    got = tagger.preprocess(Image.fromarray(rgba, "RGBA"))
    assert got.dtype == np.float32 and got.shape == (8, 8, 3)
    np.testing.assert_array_equal(got, expected)


def test_preprocess_pads_centered_on_white_without_resize(tagger):
    # 64 wide x 32 high pure red: 16 white rows above and below, no resize at 64.
    got = tagger.preprocess(solid((255, 0, 0), (64, 32)))
    expected = np.full((64, 64, 3), 255, dtype=np.float32)
    expected[16:48] = [0, 0, 255]  # BGR
    np.testing.assert_array_equal(got, expected)
    # A tall image pads left and right; a grayscale one becomes three equal channels.
    got = tagger.preprocess(Image.new("L", (16, 64), 10))
    assert (got[:, 24:40] == 10).all() and (got[:, :24] == 255).all() and (got[:, 40:] == 255).all()


def test_preprocess_downscales_a_large_image(tagger):
    rgb = np.random.default_rng(0).integers(0, 256, (90, 150, 3), dtype=np.uint8)  # 150 wide, 90 high
    square = np.pad(rgb, ((30, 30), (0, 0), (0, 0)), constant_values=255)
    resized = np.asarray(Image.fromarray(square).resize((64, 64), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(
        tagger.preprocess(Image.fromarray(rgb)), resized[:, :, ::-1].astype(np.float32)
    )
    got = tagger.preprocess(solid((0, 0, 255), (300, 300)))
    np.testing.assert_array_equal(got, np.broadcast_to(np.float32([255, 0, 0]), (64, 64, 3)))


def test_preprocess_palette_transparency_is_white(tagger):
    image = Image.new("P", (64, 64), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 64, 32))  # top half red, bottom half palette entry 0, transparent
    image.info["transparency"] = 0
    got = tagger.preprocess(image)
    assert (got[:32] == [0, 0, 255]).all() and (got[32:] == 255).all()


# --- scores to tags ---------------------------------------------------------------------------------


def test_red_image_tags_at_two_general_thresholds(tagger):
    low = tagger.predict([solid((255, 0, 0))], general_threshold=0.35)[0]
    high = tagger.predict([solid((255, 0, 0))], general_threshold=0.7)[0]
    assert [name for name, _ in low.general] == ["red_background", "simple_background", "1girl", "solo"]
    assert [name for name, _ in high.general] == ["red_background", "simple_background", "1girl"]
    scores = dict(low.general)
    assert scores["red_background"] == pytest.approx(sig(6), abs=1e-5)
    assert scores["simple_background"] == pytest.approx(sig(2.5), abs=1e-5)
    assert scores["solo"] == pytest.approx(0.5, abs=1e-5)
    # Sorted by confidence, highest first.
    assert [s for _, s in low.general] == sorted((s for _, s in low.general), reverse=True)
    assert low.character == [("kasane_teto", pytest.approx(sig(2.5), abs=1e-5))]


def test_rating_is_kept_aside(tagger):
    result = tagger.predict([solid((255, 0, 0))], general_threshold=0.0, character_threshold=0.0)[0]
    assert set(result.rating) == {"general", "sensitive", "questionable", "explicit"}
    assert result.rating["general"] == pytest.approx(sig(1), abs=1e-5)
    assert result.rating["sensitive"] == pytest.approx(sig(-1), abs=1e-5)
    assert result.rating["questionable"] == pytest.approx(sig(-4), abs=1e-5)
    assert result.rating["explicit"] == pytest.approx(sig(-6), abs=1e-5)
    names = [n for n, _ in result.general + result.character]
    assert not set(names) & set(result.rating)
    assert len(result.general) == 10 and len(result.character) == 2  # threshold 0 keeps every tag


def test_character_threshold_is_separate(tagger):
    green, cyan = solid((0, 255, 0)), solid((0, 255, 255))
    strict = tagger.predict([green, cyan], general_threshold=0.35, character_threshold=0.85)
    loose = tagger.predict([green, cyan], general_threshold=0.35, character_threshold=0.5)
    assert strict[0].character == [("hatsune_miku", pytest.approx(sig(2.5), abs=1e-5))]
    assert strict[1].character == []
    assert loose[1].character == [("hatsune_miku", pytest.approx(sig(0.5), abs=1e-5))]
    # The general threshold alone decides general tags: cyan's green_hair (sig 2) is in both.
    assert strict[1].general == loose[1].general
    assert "green_hair" in dict(strict[0].general)  # underscores kept
    # A very high general threshold leaves character tags alone.
    only_char = tagger.predict([green], general_threshold=0.999, character_threshold=0.85)[0]
    assert only_char.general == [] and [n for n, _ in only_char.character] == ["hatsune_miku"]


def test_padding_shows_in_the_scores(tagger):
    # The white padding of a 64x32 red image halves the red background's lead: (r, g, b) means (1, .5, .5).
    result = tagger.predict([solid((255, 0, 0), (64, 32))])[0]
    assert dict(result.general)["red_background"] == pytest.approx(sig(2), abs=1e-4)


def test_results_from_scores_without_a_model():
    labels = Labels(
        ["general", "explicit", "blue_hair", "1girl", "smile", "some_character_(series)", "artist_x"],
        [9, 9, 0, 0, 0, 4, 1],
    )
    scores = np.array([0.9, 0.1, 0.35, 0.8, 0.2, 0.86, 0.99], dtype=np.float32)
    result = results_from_scores(scores, labels, 0.35, 0.85)
    assert isinstance(result, TagResult)
    assert [n for n, _ in result.general] == ["1girl", "blue_hair"]  # at the threshold counts
    assert [n for n, _ in result.character] == ["some_character_(series)"]
    assert result.rating == {"general": pytest.approx(0.9), "explicit": pytest.approx(0.1)}
    assert [n for n, _ in results_from_scores(scores, labels, 0.5, 0.9).general] == ["1girl"]
    with pytest.raises(TaggerError):
        results_from_scores(scores[:3], labels, 0.35, 0.85)


# --- batches ------------------------------------------------------------------------------------------


def test_batches_and_progress_keep_input_order(tagger):
    colors = [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 255), (0, 0, 0)]
    calls = []
    results = tagger.predict(
        [solid(c, (20 + i, 30)) for i, c in enumerate(colors)],
        batch_size=2,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(2, 5), (4, 5), (5, 5)]
    top = [r.general[0][0] for r in results]
    assert top[:3] == ["red_background", "blue_background", "green_background"]
    assert "white_background" in dict(results[3].general) and "smile" in dict(results[3].general)
    assert "black_background" in dict(results[4].general)
    assert tagger.predict([]) == []


def test_fixed_batch_model_runs_its_own_batch(tiny_dir, tmp_path):
    import onnx

    fixed = tmp_path / "fixed"
    shutil.copytree(tiny_dir, fixed)
    model = onnx.load(fixed / "model.onnx")
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 2
    onnx.save(model, fixed / "model.onnx")
    calls = []
    colors = [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    results = Tagger(fixed).predict(
        [solid(c) for c in colors], batch_size=8, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(2, 3), (3, 3)]
    assert [r.general[0][0] for r in results] == ["red_background", "blue_background", "green_background"]


# --- errors -------------------------------------------------------------------------------------------


def test_clear_errors_for_bad_folders(tmp_path, tiny_dir):
    with pytest.raises(TaggerError, match="does not exist"):
        Tagger(tmp_path / "nowhere")

    no_model = tmp_path / "no_model"
    no_model.mkdir()
    shutil.copy(tiny_dir / "selected_tags.csv", no_model)
    with pytest.raises(TaggerError, match="has no model.onnx"):
        Tagger(no_model)

    no_csv = tmp_path / "no_csv"
    no_csv.mkdir()
    shutil.copy(tiny_dir / "model.onnx", no_csv)
    with pytest.raises(TaggerError, match="has no selected_tags.csv"):
        Tagger(no_csv)

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(TaggerError, match="cannot load"):
        Tagger(broken)


def test_clear_errors_for_bad_tag_lists(tmp_path, tiny_dir):
    short = tmp_path / "short"
    shutil.copytree(tiny_dir, short)
    lines = (short / "selected_tags.csv").read_text(encoding="utf-8").splitlines()
    (short / "selected_tags.csv").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(TaggerError, match="lists 15 tags but model.onnx gives 16 scores"):
        Tagger(short)

    headerless = tmp_path / "headerless"
    shutil.copytree(tiny_dir, headerless)
    (headerless / "selected_tags.csv").write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    with pytest.raises(TaggerError, match="header"):
        Tagger(headerless)

    bad_category = tmp_path / "bad_category"
    shutil.copytree(tiny_dir, bad_category)
    (bad_category / "selected_tags.csv").write_text(
        "\n".join([*lines[:-1], "1,kasane_teto,character,5"]) + "\n", encoding="utf-8"
    )
    with pytest.raises(TaggerError, match="line 17"):
        Tagger(bad_category)


# --- sources --------------------------------------------------------------------------------------------


def test_from_source_local_folder_and_bad_source(tiny_dir, tmp_path):
    assert Tagger.from_source(str(tiny_dir)).input_size == 64
    with pytest.raises(TaggerError, match="neither a tagger folder nor"):
        Tagger.from_source(str(tmp_path / "not" / "here"))
    with pytest.raises(TaggerError, match="is a file"):
        Tagger.from_source(str(tiny_dir / "model.onnx"))


def test_from_source_downloads_once(tiny_dir, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, local_dir):
        calls.append((repo_id, filename))
        dest = local_dir / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_dir / filename, dest)
        return str(dest)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    first = Tagger.from_source("SmilingWolf/wd-vit-tagger-v3", cache_dir=tmp_path)
    second = Tagger.from_source("SmilingWolf/wd-vit-tagger-v3", cache_dir=tmp_path)
    assert len(calls) == 2 and {f for _, f in calls} == {"model.onnx", "selected_tags.csv"}
    assert first.model_dir == second.model_dir and first.model_dir.is_relative_to(tmp_path)


def test_from_source_offline_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(TaggerError, match="cannot download the tagger SmilingWolf/wd-vit-tagger-v3"):
        Tagger.from_source("SmilingWolf/wd-vit-tagger-v3", cache_dir=tmp_path)
