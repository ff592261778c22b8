"""Shared start-up for the stage scripts: logging, params, clean errors."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from cardiac_sr.errors import CardiacSRError
from cardiac_sr.names import DEGRADED_DIR, EXTERNAL_DIR, METRICS_DIR, MODELS_DIR, PREPARED_DIR
from cardiac_sr.params import load_params
from cardiac_sr.runtime import start_tensorflow

# the data paths a stage reads or writes, given in dvc.yaml's cmd (as DVC's example-get-started does)
PATHS = {"prepared": PREPARED_DIR, "degraded": DEGRADED_DIR, "external": EXTERNAL_DIR, "models": MODELS_DIR,
         "metrics": METRICS_DIR}


def arguments(doc: str, paths: tuple[str, ...], names: str | None = None) -> argparse.Namespace:
    """The stage's command line: ``names`` (model or method names, one or more) and its data paths."""
    parser = argparse.ArgumentParser(description=doc)
    if names:
        parser.add_argument(names, nargs="+")
    for key in paths:
        parser.add_argument(f"--{key}", default=PATHS[key], metavar="DIR", help=f"default: {PATHS[key]}")
    return parser.parse_args()


def run(stage: Callable[..., None], tensorflow: bool = False, args: argparse.Namespace | None = None) -> None:
    """Load params.yaml, run ``stage(params)`` (``stage(params, args)`` with ``args``); a user error exits 2
    with one line.

    ``tensorflow``: the stage uses TensorFlow; start it quietly first (cardiac_sr.runtime).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        if tensorflow:
            start_tensorflow()
        params = load_params("params.yaml")
        stage(params) if args is None else stage(params, args)
    except CardiacSRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as exc:  # Ctrl-C: one line saying what was kept (outputs are written atomically)
        print(str(exc) or "interrupted; nothing half-written was left", file=sys.stderr)
        sys.exit(130)
