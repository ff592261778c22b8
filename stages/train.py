"""DVC stage `train@<loss>-<upsampling>`: train one generator (see cardiac_sr.train).

Usage: python stages/train.py perceptual-TS [--prepared DIR --degraded DIR --models DIR]
"""

from _common import arguments, run

from cardiac_sr.card import Card
from cardiac_sr.params import Params
from cardiac_sr.train import RunDir, train_model


def main(params: Params, args) -> None:
    degrade = params.need("degrade")
    for name in args.model:
        summary = train_model(name, params.train_for(name), Card.for_training(name, degrade, params.prepare),
                              args.prepared, args.degraded, RunDir.under(".", name, models_dir=args.models))
        print(f"{name} final:", summary["final"])


if __name__ == "__main__":
    run(main, tensorflow=True, args=arguments(__doc__, ("prepared", "degraded", "models"), names="model"))
