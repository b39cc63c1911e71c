"""Auto-tagging with a WD14-style ONNX tagger (SmilingWolf's wd-v1-4 / wd-v3 models) through onnxruntime.

A model folder holds ``model.onnx`` and ``selected_tags.csv`` (``tag_id,name,category,count``;
category 9 = rating, 0 = general, 4 = character). Preprocessing follows the reference
taggers (the models' Hugging Face space and sd-scripts' tag_images_by_wd14_tagger.py):
transparency composited on white, padded to a centered square on white, resized with
bicubic to the model's input size, RGB turned to BGR, float32 0-255 without
normalization, NHWC. The model's output is already sigmoid scores. Tag names are kept
as in the CSV (underscores included); a tag is kept when its score is at least its
threshold.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import TrainerError

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
LABELS_FILE = "selected_tags.csv"
RATING, GENERAL, CHARACTER = 9, 0, 4
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "loratrain-bot" / "taggers"
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class TaggerError(TrainerError, RuntimeError):
    """The tagger model cannot be used; the message says what to fix."""


@dataclass
class TagResult:
    general: list[tuple[str, float]]  # at or above the general threshold, highest score first
    character: list[tuple[str, float]]  # at or above the character threshold, highest score first
    rating: dict[str, float]  # every rating tag's score


@dataclass(frozen=True)
class Labels:
    """The tag names of a model's outputs, in output order, and their categories."""

    names: list[str]
    categories: list[int]

    def indices(self, category: int) -> list[int]:
        return [i for i, c in enumerate(self.categories) if c == category]


def load_labels(path: str | Path) -> Labels:
    """Read ``selected_tags.csv``; rows other than rating, general or character are kept but never shown."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TaggerError(f"cannot read the tag list {path}: {exc}") from exc
    if not rows or [h.strip() for h in rows[0][:3]] != ["tag_id", "name", "category"]:
        raise TaggerError(
            f"{path} is not a WD14 tag list: its header must be tag_id,name,category,count "
            "(use the selected_tags.csv of the same model repository)"
        )
    names, categories = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            name, category = row[1], int(row[2])
        except (IndexError, ValueError) as exc:
            raise TaggerError(f"{path}, line {line}: expected tag_id,name,category,count, got {row}") from exc
        names.append(name)
        categories.append(category)
    if not names:
        raise TaggerError(f"{path} lists no tags")
    return Labels(names, categories)


def results_from_scores(
    scores: np.ndarray, labels: Labels, general_threshold: float, character_threshold: float
) -> TagResult:
    """One image's tags from its row of scores (one score per label, in label order)."""
    scores = np.asarray(scores).reshape(-1)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    if len(scores) != len(labels.names):
        raise TaggerError(f"the model gave {len(scores)} scores for {len(labels.names)} tags")

    def above(category: int, threshold: float) -> list[tuple[str, float]]:
        # Compared in the scores' own precision, so a float32 0.35 passes a 0.35 threshold.
        keep = scores >= np.asarray(threshold, dtype=scores.dtype)
        picked = [(labels.names[i], float(scores[i])) for i in labels.indices(category) if keep[i]]
        return sorted(picked, key=lambda item: item[1], reverse=True)  # stable: ties keep CSV order

    rating = {labels.names[i]: float(scores[i]) for i in labels.indices(RATING)}
    return TagResult(above(GENERAL, general_threshold), above(CHARACTER, character_threshold), rating)


def default_providers() -> list[str]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited on white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


class Tagger:
    """A loaded WD14-style tagger: ``Tagger("models/wd-vit-tagger-v3").predict(images)``."""

    def __init__(self, model_dir: str | Path, providers: list[str] | None = None):
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        model_path = self.model_dir / MODEL_FILE
        if not self.model_dir.is_dir():
            raise TaggerError(f"tagger folder {self.model_dir} does not exist")
        if not model_path.is_file():
            raise TaggerError(
                f"{self.model_dir} has no {MODEL_FILE}: put a WD14 tagger's {MODEL_FILE} and "
                f"{LABELS_FILE} there (e.g. from SmilingWolf/wd-vit-tagger-v3)"
            )
        if not (self.model_dir / LABELS_FILE).is_file():
            raise TaggerError(f"{self.model_dir} has no {LABELS_FILE}: copy it from the model's repository")
        self.labels = load_labels(self.model_dir / LABELS_FILE)
        self.providers = providers or default_providers()
        try:
            self.session = ort.InferenceSession(str(model_path), providers=self.providers)
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise TaggerError(f"onnxruntime cannot load {model_path}: {exc}") from exc

        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape
        if len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], int) or shape[1] != shape[2]:
            raise TaggerError(
                f"{model_path} is not a WD14 tagger: its input should be [batch, size, size, 3], not {shape}"
            )
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_size: int = shape[1]
        # A model exported with a fixed batch runs that many at a time (the last batch padded).
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        count = outputs[0].shape[-1] if outputs[0].shape else None
        if isinstance(count, int) and count != len(self.labels.names):
            raise TaggerError(
                f"{LABELS_FILE} lists {len(self.labels.names)} tags but {MODEL_FILE} gives {count} scores: "
                "both files must come from the same model repository"
            )

    @classmethod
    def from_source(cls, source: str, cache_dir: str | Path | None = None) -> Tagger:
        """A local model folder, or a Hugging Face repo id downloaded once into ``cache_dir``."""
        local = Path(source).expanduser()
        if local.is_dir():
            return cls(local)
        if local.exists():
            raise TaggerError(
                f"{source} is a file: give the folder that holds {MODEL_FILE} and {LABELS_FILE}"
            )
        if not _REPO_ID.match(source):
            raise TaggerError(f"{source} is neither a tagger folder nor a Hugging Face repo id (owner/name)")
        target = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser() / source.replace("/", "--")
        if not all((target / name).is_file() for name in (MODEL_FILE, LABELS_FILE)):
            log.info("downloading the tagger %s into %s", source, target)
            try:
                from huggingface_hub import hf_hub_download

                for name in (LABELS_FILE, MODEL_FILE):
                    hf_hub_download(source, name, local_dir=target)
            except Exception as exc:  # offline, unknown repo, missing file, bad id: all mean the same here
                raise TaggerError(
                    f"cannot download the tagger {source} from Hugging Face ({type(exc).__name__}: {exc}); "
                    f"without internet, put its {MODEL_FILE} and {LABELS_FILE} in a folder and use that path"
                ) from exc
        return cls(target)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """The model's input for one image: (size, size, 3) float32, BGR, 0-255."""
        image = _to_rgb(image)
        side = max(image.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        if side != self.input_size:
            square = square.resize((self.input_size, self.input_size), Image.Resampling.BICUBIC)
        return np.asarray(square, dtype=np.float32)[:, :, ::-1].copy()

    def predict(
        self,
        images: Sequence[Image.Image],
        general_threshold: float = 0.35,
        character_threshold: float = 0.85,
        batch_size: int = 8,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[TagResult]:
        """Tags for each image, in input order; ``progress(done, total)`` after each batch."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        batch_size = self.fixed_batch or batch_size
        total, results = len(images), []
        for start in range(0, total, batch_size):
            chunk = images[start : start + batch_size]
            batch = np.stack([self.preprocess(image) for image in chunk])
            if self.fixed_batch and len(chunk) < self.fixed_batch:
                batch = np.concatenate([batch, np.zeros((self.fixed_batch - len(chunk), *batch.shape[1:]))])
            scores = self.session.run([self.output_name], {self.input_name: batch.astype(np.float32)})[0]
            results += [
                results_from_scores(row, self.labels, general_threshold, character_threshold)
                for row in scores[: len(chunk)]
            ]
            if progress is not None:
                progress(len(results), total)
        return results
