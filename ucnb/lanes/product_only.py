"""What the four product-only lanes share: no lab stand-in, so their only profile is `ultracloud`.

Each lane module declares its name, title and why the lab cannot run it; the schema (defaults run
the product), the boot (the product's own command) and the result table are the same for all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ucnb.kernel.product import product_result
from ucnb.kernel.steps import boots
from ucnb.lanes import Lane, LaneParameters

if TYPE_CHECKING:
    from ucnb.kernel.run import Run

__all__ = ["Parameters", "boot", "product_lane", "product_result"]


class Parameters(LaneParameters):
    # The lane's only profile: the notebook's defaults run the product.
    profile: Literal["lab", "ultracloud"] = "ultracloud"


def product_lane(name: str, title: str, lab_unavailable: str) -> Lane:
    return Lane(name=name, title=title, parameters=Parameters, lab_unavailable=lab_unavailable)


@boots
def boot(run: Run) -> None:
    """The product's command for the lane (ultracloud). The lab profile is refused before a run
    starts, so on the lab this is never reached; if it were, it refuses with the same reason."""
    run.lane.check_profile(run.profile.name)
