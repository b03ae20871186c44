"""The price model behind `cost`: the same request always costs the same (README: Pricing)."""

from __future__ import annotations

from kiln.settings import Prices


def image_cost(
    prices: Prices,
    *,
    width: int,
    height: int,
    steps: int,
    nsfw_check: bool = False,
    prompt_weighting: bool = False,
) -> float:
    """USD for one image: megapixels × steps × the per-megapixel-step price, plus add-ons."""
    cost = prices.per_megapixel_step * (width * height / 1_000_000) * steps
    if nsfw_check:
        cost += prices.nsfw_check
    if prompt_weighting:
        cost += prices.prompt_weighting
    return round(cost, 10)
