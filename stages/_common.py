"""Shared start-up for the stage scripts: logging, params, clean errors."""

from __future__ import annotations

import logging
import sys
from typing import Callable

from cardiac_sr.errors import CardiacSRError
from cardiac_sr.params import load_params
from cardiac_sr.runtime import start_tensorflow


def run(stage: Callable[[dict], None], tensorflow: bool = False) -> None:
    """Load params.yaml, run ``stage(params)``; a user error exits 2 with one line.

    ``tensorflow``: the stage uses TensorFlow; start it quietly first (cardiac_sr.runtime).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        if tensorflow:
            start_tensorflow()
        stage(load_params("params.yaml"))
    except CardiacSRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as exc:  # Ctrl-C: one line saying what was kept (outputs are written atomically)
        print(str(exc) or "interrupted; nothing half-written was left", file=sys.stderr)
        sys.exit(130)
