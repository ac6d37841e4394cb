"""argparse value types shared by the subcommands (and the registry options)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def seconds(upper: float | None = None) -> Callable[[str], float]:
    """A number of seconds from 0 to `upper` (None: no upper bound)."""
    limit = math.inf if upper is None else upper
    bounds = "0 or more" if upper is None else f"0 to {upper:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 <= value <= limit:  # also refuses nan
            raise argparse.ArgumentTypeError(f"invalid seconds {text!r} ({bounds})")
        return value

    return parse
