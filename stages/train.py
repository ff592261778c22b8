"""DVC stage `train@<loss>-<upsampling>`: train one generator (see cardiac_sr.train).

Usage: python stages/train.py perceptual-TS [--prepared DIR --degraded DIR --models DIR]
"""

from _common import arguments, run

from cardiac_sr.train import train_model


def main(params: dict, args) -> None:
    for name in args.model:
        summary = train_model(name, params, args.prepared, args.degraded, model_path=f"{args.models}/{name}.keras")
        print(f"{name} final:", summary["final"])


if __name__ == "__main__":
    run(main, tensorflow=True, args=arguments(__doc__, ("prepared", "degraded", "models"), names="model"))
