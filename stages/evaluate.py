"""DVC stages `evaluate@<model>` and `baselines`: score methods on the test split (see cardiac_sr.evaluate).

Usage: python stages/evaluate.py METHOD [METHOD ...] [--prepared DIR ...]   (mse-TS, bicubic, nearest, zerofill, ...)
"""

from _common import arguments, run

from cardiac_sr.evaluate import evaluate_method
from cardiac_sr.names import BASELINES
from cardiac_sr.params import Params


def main(params: Params, args) -> None:
    degrade, train = params.need("degrade", "train")
    for method in args.method:
        evaluate_method(method, args.prepared, args.degraded, args.models, args.metrics, scale=degrade.scale,
                        perceptual_weights=train.perceptual.weights, external_dir=args.external,
                        ensemble=params.evaluate.self_ensemble and method not in BASELINES)


if __name__ == "__main__":
    run(main, tensorflow=True, args=arguments(__doc__, ("prepared", "degraded", "external", "models", "metrics"),
                                             names="method"))
