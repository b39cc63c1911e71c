"""sd-scripts' block-wise learning rates and ranks, per model family.

``down_lr_weight`` / ``mid_lr_weight`` / ``up_lr_weight`` scale the UNet's learning rate per
block, ``block_dims`` / ``block_alphas`` give each block its own rank and alpha (the options of
sd-scripts' ``networks/lora.py``). How many values a list must have depends on the family, so
these checks run once the family is known: in the bot before it charges, and in the trainer once
the model is loaded. No torch here: the bot imports this module.

Blocks, numbered as sd-scripts' ``get_block_index`` numbers them:

- SD1.5 (25): ``IN00``-``IN11`` (0-11; diffusers ``down_blocks.i.{resnets,attentions}.j`` is
  ``1 + 3*i + j``), ``MID`` (12), ``OUT00``-``OUT11`` (13-24; ``up_blocks.i.*.j`` is
  ``13 + 3*i + j``). The lr weights are down (12) + mid (1) + up (12).
- SDXL (23): ``EMB`` (0, time/label embedding), ``IN00``-``IN08`` (1-9, ``input_blocks.N``),
  ``MID00``-``MID02`` (10-12, ``middle_block.K``), ``OUT00``-``OUT08`` (13-21,
  ``output_blocks.N``), ``OUT`` (22, the output convolution). The lr weights are
  1.0 + down (9) + mid (3) + up (9) + 1.0.

Where sd-scripts pads a short lr list with 1.0 and truncates a long one, we refuse a wrong count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .jobs import TrainJob

__all__ = [
    "LAYOUTS",
    "BlockLayout",
    "block_dims_alphas",
    "block_labels",
    "block_lr_weights",
    "block_problems",
    "layout",
    "network_args",
    "preset_weights",
    "uses_block_dims",
    "uses_block_lr",
]

_LR_KEYS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight")


def _kind(label: str) -> tuple[str, bool]:
    """IN/MID/OUT numbered blocks, or a block of its own (MID, EMB, OUT)."""
    prefix = label.rstrip("0123456789")
    return prefix, prefix != label


def _labels(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i:02d}" for i in range(count))


@dataclass(frozen=True)
class BlockLayout:
    """The UNet blocks of one family, as sd-scripts counts them."""

    family: str
    name: str  #: as people write it: "SD1.5", "SDXL"
    down: int  #: values of down_lr_weight (and of up_lr_weight)
    mid: int  #: values of mid_lr_weight
    labels: tuple[str, ...]  #: one per block; len = values of block_dims / block_alphas
    lr_first: int  #: index of the first down block in the full per-block list
    lora_blocks: frozenset[int]  #: blocks holding LoRA modules in the full-size model

    @property
    def total(self) -> int:
        return len(self.labels)

    @property
    def up(self) -> int:
        return self.down

    def span(self, part: str) -> str:
        """``IN00-IN08`` style range of the blocks a lr list covers."""
        starts = {"down": 0, "mid": self.down, "up": self.down + self.mid}
        first = self.lr_first + starts[part]
        count = self.mid if part == "mid" else self.down
        return self.names(list(range(first, first + count)))

    def names(self, blocks: list[int]) -> str:
        """``IN01-IN02, IN04, MID`` for block indices: consecutive blocks of one kind as a range."""
        runs: list[list[int]] = []
        for i in sorted(blocks):
            if runs and i == runs[-1][-1] + 1 and _kind(self.labels[i]) == _kind(self.labels[i - 1]):
                runs[-1].append(i)
            else:
                runs.append([i])
        return ", ".join(
            self.labels[r[0]] if len(r) == 1 else f"{self.labels[r[0]]}-{self.labels[r[-1]]}" for r in runs
        )

    def all_blocks(self) -> str:
        """Every block, grouped: ``IN00-IN11, MID, OUT00-OUT11``."""
        return self.names(list(range(self.total)))


LAYOUTS: dict[str, BlockLayout] = {
    "sd15": BlockLayout(
        family="sd15",
        name="SD1.5",
        down=12,
        mid=1,
        labels=(*_labels("IN", 12), "MID", *_labels("OUT", 12)),
        lr_first=0,
        lora_blocks=frozenset({1, 2, 4, 5, 7, 8, 12, *range(16, 25)}),
    ),
    "sdxl": BlockLayout(
        family="sdxl",
        name="SDXL",
        down=9,
        mid=3,
        labels=("EMB", *_labels("IN", 9), *_labels("MID", 3), *_labels("OUT", 9), "OUT"),
        lr_first=1,
        lora_blocks=frozenset({5, 6, 8, 9, 11, *range(13, 19)}),
    ),
}


def layout(family: str) -> BlockLayout:
    try:
        return LAYOUTS[family]
    except KeyError:
        raise ValueError(
            f"unknown model family {family!r}: block-wise options need one of {', '.join(LAYOUTS)}"
        ) from None


def block_labels(family: str) -> list[str]:
    """IN00.. / MID.. / OUT.. labels, one per entry of block_dims (25 SD1.5, 23 SDXL)."""
    return list(layout(family).labels)


def preset_weights(preset: str, count: int) -> list[float]:
    """sd-scripts' lr weight presets over ``count`` blocks; ``name+0.5`` adds 0.5 to each."""
    name, _, base_text = preset.strip().lower().replace(" ", "").partition("+")
    base = float(base_text) if base_text else 0.0
    steps = [i / (count - 1) for i in range(count)]
    if name == "cosine":
        return [math.sin(math.pi * s / 2) + base for s in reversed(steps)]
    if name == "sine":
        return [math.sin(math.pi * s / 2) + base for s in steps]
    if name == "linear":
        return [s + base for s in steps]
    if name == "reverse_linear":
        return [s + base for s in reversed(steps)]
    if name == "zeros":
        return [base] * count
    raise ValueError(f"unknown lr weight preset {preset!r}")


def uses_block_lr(job: TrainJob) -> bool:
    return any(getattr(job, key) is not None for key in _LR_KEYS)


def uses_block_dims(job: TrainJob) -> bool:
    """Whether the UNet gets per-block ranks (block_dims, or lr weights, as in sd-scripts)."""
    return job.block_dims is not None or uses_block_lr(job)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _count_problems(job: TrainJob, lay: BlockLayout) -> list[str]:
    problems = []
    for key, part, want, what in (
        ("down_lr_weight", "down", lay.down, "down"),
        ("mid_lr_weight", "mid", lay.mid, "middle"),
        ("up_lr_weight", "up", lay.up, "up"),
    ):
        value = getattr(job, key)
        if isinstance(value, list) and len(value) != want:
            problems.append(
                f"{key} has {_plural(len(value), 'value')}; {lay.name} has "
                f"{_plural(want, what + ' block')} ({lay.span(part)})"
            )
    for key in ("block_dims", "block_alphas"):
        value = getattr(job, key)
        if value is not None and len(value) != lay.total:
            problems.append(
                f"{key} has {_plural(len(value), 'value')}; {lay.name} has "
                f"{lay.total} blocks ({lay.all_blocks()})"
            )
    return problems


def _lr_list(value: str | list[float] | None, count: int, threshold: float) -> list[float]:
    if value is None:
        return [1.0] * count  # an unset part trains at the full rate, untouched by the threshold
    weights = preset_weights(value, count) if isinstance(value, str) else [float(v) for v in value]
    return [w if w > threshold else 0.0 for w in weights]


def _lr_weights(job: TrainJob, lay: BlockLayout) -> list[float] | None:
    if not uses_block_lr(job):
        return None
    threshold = job.block_lr_zero_threshold
    weights = (
        _lr_list(job.down_lr_weight, lay.down, threshold)
        + _lr_list(job.mid_lr_weight, lay.mid, threshold)
        + _lr_list(job.up_lr_weight, lay.up, threshold)
    )
    if lay.lr_first:
        weights = [1.0, *weights, 1.0]  # SDXL's embedding and output blocks (no LoRA there)
    return weights


def _dims_alphas(job: TrainJob, lay: BlockLayout) -> tuple[list[int], list[float]] | None:
    if not uses_block_dims(job):
        return None
    dims = list(job.block_dims) if job.block_dims is not None else [job.network_dim] * lay.total
    alphas = [float(a) for a in job.block_alphas] if job.block_alphas is not None else None
    if alphas is None:
        alphas = [float(job.network_alpha)] * lay.total
    weights = _lr_weights(job, lay)
    if weights is not None:
        dims = [0 if w == 0 else d for d, w in zip(dims, weights, strict=True)]
    # sd-scripts' LoRAModule: alpha 0 means alpha = rank (scale 1).
    alphas = [float(d) if a == 0 and d else a for d, a in zip(dims, alphas, strict=True)]
    return dims, alphas


def block_problems(job: TrainJob, family: str) -> list[str]:
    """One line per block-option problem that needs the family; empty when the job is fine."""
    if not uses_block_dims(job) and job.block_alphas is None:
        return []
    try:
        lay = layout(family)
    except ValueError as exc:
        return [str(exc)]
    problems = _count_problems(job, lay)
    if problems:
        return problems
    dims, _ = _dims_alphas(job, lay) or ([], [])
    weights = _lr_weights(job, lay)
    nothing = "the UNet would train nothing (to train only the text encoders, use text_encoder_only)"
    if job.block_dims is not None and not any(job.block_dims):
        problems.append(f"block_dims gives every block 0: {nothing}")
    elif weights is not None and not any(weights[lay.lr_first : lay.lr_first + 2 * lay.down + lay.mid]):
        cut = job.block_lr_zero_threshold
        why = f" (weights at or below block_lr_zero_threshold {cut:g} count as 0)" if cut else ""
        problems.append(f"down/mid/up_lr_weight give every block weight 0{why}: {nothing}")
    elif dims and not any(dims[i] for i in lay.lora_blocks):
        lora = lay.names(sorted(lay.lora_blocks))
        problems.append(
            f"no block that holds LoRA modules keeps a rank and an lr weight above 0 ({lay.name} has "
            f"LoRA modules in {lora}): {nothing}"
        )
    return problems


def _check(job: TrainJob, family: str) -> BlockLayout:
    lay = layout(family)
    problems = _count_problems(job, lay)
    if problems:
        raise ValueError("; ".join(problems))
    return lay


def block_lr_weights(job: TrainJob, family: str) -> list[float] | None:
    """The lr weight of every block (25 SD1.5, 23 SDXL), presets expanded and the zero threshold
    applied (a weight at or below it is 0); None when no lr weight option is set.

    Raises ValueError when a list has the wrong count (see :func:`block_problems`)."""
    if not uses_block_lr(job):
        return None
    return _lr_weights(job, _check(job, family))


def block_dims_alphas(job: TrainJob, family: str) -> tuple[list[int], list[float]] | None:
    """(rank, alpha) of every block (25 SD1.5, 23 SDXL); None when neither block_dims nor lr weights
    are set (then network_dim/network_alpha apply everywhere).

    As sd-scripts: missing block_dims -> network_dim, missing block_alphas -> network_alpha, a
    block whose lr weight is 0 gets rank 0 (no LoRA module), alpha 0 means alpha = rank."""
    if not uses_block_dims(job):
        return None
    return _dims_alphas(job, _check(job, family))


def _number(value: float) -> str:
    return repr(float(value))


def network_args(job: TrainJob) -> dict[str, str]:
    """The block options as sd-scripts' ``--network_args`` (and ``ss_network_args``) hold them:
    strings, lists comma-separated; only the options that are set."""
    args: dict[str, str] = {}
    for key in _LR_KEYS:
        value = getattr(job, key)
        if isinstance(value, str):
            args[key] = value
        elif value is not None:
            args[key] = ",".join(_number(v) for v in value)
    if job.block_lr_zero_threshold > 0:
        args["block_lr_zero_threshold"] = _number(job.block_lr_zero_threshold)
    if job.block_dims is not None:
        args["block_dims"] = ",".join(str(int(d)) for d in job.block_dims)
    if job.block_alphas is not None:
        args["block_alphas"] = ",".join(_number(a) for a in job.block_alphas)
    return args
