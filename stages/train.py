"""DVC stage `train@<loss>-<upsampling>`: train one generator (see cardiac_sr.train).

Usage: python stages/train.py perceptual-TS
"""

import sys

from _common import run

from cardiac_sr.train import train_model


def main(params: dict) -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/train.py <loss>-<upsampling>   (e.g. mse-TS)")
    summary = train_model(sys.argv[1], params)
    print("final:", summary["final"])


if __name__ == "__main__":
    run(main, tensorflow=True)
