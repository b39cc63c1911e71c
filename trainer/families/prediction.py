"""What a model says of its training target and noise schedule: v-prediction, zero terminal SNR.

A diffusers folder says it in ``scheduler/scheduler_config.json`` (``prediction_type:
"v_prediction"``, ``rescale_betas_zero_snr: true``). A single-file checkpoint (NoobAI-XL v-pred
and kin) says it with ComfyUI's marker tensors: empty tensors named ``v_pred`` and ``ztsnr`` at
the top level, which ComfyUI's checkpoint saver writes and its model detection reads
(``comfy_extras/nodes_model_merging.py``, ``comfy/supported_models.py``); a checkpoint sd-scripts
saved says v-prediction in its ``modelspec.prediction_type`` metadata ("v").

Only what a model states is read here: nothing stated reads as epsilon without rescaling, and
the job's ``v_parameterization`` / ``zero_terminal_snr`` options override either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

#: ComfyUI's marker tensors of a v-prediction and of a zero-terminal-SNR checkpoint.
V_PRED_MARKER = "v_pred"
ZTSNR_MARKER = "ztsnr"
#: The SAI model spec's v-prediction value (sd-scripts' ``PRED_TYPE_V``).
MODELSPEC_V = "v"


@dataclass(frozen=True)
class Prediction:
    """What a model states; False where it states nothing."""

    v_prediction: bool = False
    zero_terminal_snr: bool = False


def read_prediction(source: str | Path) -> Prediction:
    """What the diffusers folder or ``.safetensors`` checkpoint at ``source`` states; nothing for a
    hub id (diffusers' loaded scheduler config is all there is to read there)."""
    path = Path(source)
    if path.is_dir():
        return folder_prediction(path)
    if path.is_file() and path.suffix == ".safetensors":
        return checkpoint_prediction(path)
    return Prediction()


def folder_prediction(folder: Path) -> Prediction:
    """From a diffusers folder's ``scheduler/scheduler_config.json`` (read here, not from the loaded
    scheduler: a scheduler class without ``rescale_betas_zero_snr`` drops that key)."""
    config = folder / "scheduler" / "scheduler_config.json"
    if not config.is_file():
        return Prediction()
    data = json.loads(config.read_text())
    return Prediction(
        v_prediction=data.get("prediction_type") == "v_prediction",
        zero_terminal_snr=bool(data.get("rescale_betas_zero_snr", False)),
    )


def checkpoint_prediction(path: Path) -> Prediction:
    """From a single-file checkpoint's marker tensors and metadata (its header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        metadata = f.metadata() or {}
    return Prediction(
        v_prediction=V_PRED_MARKER in keys or metadata.get("modelspec.prediction_type") == MODELSPEC_V,
        zero_terminal_snr=ZTSNR_MARKER in keys,
    )
