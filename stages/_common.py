"""Shared start-up for the stage scripts: logging, params, clean errors."""

from __future__ import annotations

import logging
import sys
from typing import Callable

from cardiac_sr.errors import CardiacSRError
from cardiac_sr.params import load_params


def run(stage: Callable[[dict], None]) -> None:
    """Load params.yaml, run ``stage(params)``; a user error exits 2 with one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        stage(load_params("params.yaml"))
    except CardiacSRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
