"""DVC stages `evaluate@<model>` and `baselines`: score methods on the test split (see cardiac_sr.evaluate).

Usage: python stages/evaluate.py METHOD [METHOD ...]   (mse-TS, bicubic, nearest, zerofill, ...)
"""

import sys

from _common import run

from cardiac_sr.evaluate import evaluate_method
from cardiac_sr.params import get


def main(params: dict) -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python stages/evaluate.py METHOD [METHOD ...]")
    for method in sys.argv[1:]:
        evaluate_method(method, scale=int(get(params, "degrade.scale")),
                        perceptual_weights=str(get(params, "train.perceptual.weights")))


if __name__ == "__main__":
    run(main, tensorflow=True)
