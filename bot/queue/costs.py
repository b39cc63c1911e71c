"""What a job costs in stamina: one documented function per job kind, rates from settings.

Training::

    cost = round_half_up(total_steps x batch_size x (resolution / 512)^2 x step_cost[family])

so cost follows the GPU work: images seen (steps x batch) times pixels per image relative to
512 x 512, times the family's rate. The default SDXL rate, 0.2243, makes the guide's job (SDXL,
7 images x 10 repeats x 10 epochs = 700 steps, batch 1, 512 px) cost 157, what SeaArt charged;
SD1.5 costs less than half as much per step (0.1).

Generation::

    cost = round_half_up(images x (width x height / family_default_pixels) x image_cost[family])

with at least 1 for any job. The number shown before confirming IS the number charged:
both come from these functions on the same inputs.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from trainer.contract.families import family_info

REFERENCE_SIDE = 512


def _rate(value: float) -> Decimal:
    return Decimal(str(value))  # the decimal the operator typed, not its binary approximation


def _round(amount: Decimal) -> int:
    return max(1, int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP)))


def training_cost(
    total_steps: int, batch_size: int, resolution: int, family: str, step_costs: dict[str, float]
) -> int:
    """Stamina for a training job (see the module docstring)."""
    pixels = Decimal(resolution * resolution) / (REFERENCE_SIDE * REFERENCE_SIDE)
    return _round(total_steps * batch_size * pixels * _rate(step_costs[family]))


def generation_cost(images: int, width: int, height: int, family: str, image_costs: dict[str, float]) -> int:
    """Stamina for rendering ``images`` pictures (each weight of a compare grid is one picture)."""
    side = family_info(family).default_side
    pixels = Decimal(width * height) / (side * side)
    return _round(images * pixels * _rate(image_costs[family]))


def refund_for(cost: int, total: int, done: int) -> int:
    """The part of ``cost`` for the work not done: the member keeps paying only for ``done`` of ``total``.

    Work done is charged rounded up (in whole stamina), so refunds never exceed the charge.
    """
    done = max(0, min(done, total))
    kept = -(-cost * done // total)  # ceil(cost x done / total)
    return cost - kept
