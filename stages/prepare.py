"""DVC stage `prepare`: studies -> data/prepared (see cardiac_sr.prepare)."""

from _common import arguments, run

from cardiac_sr.params import Params
from cardiac_sr.prepare import prepare


def main(params: Params, args) -> None:
    prep, degrade = params.need("prepare", "degrade")
    info = prepare(prep, degrade.scale, args.prepared, allow_empty_test=params.evaluate.external is not None)
    print("slices per split:", info["splits"])


if __name__ == "__main__":
    run(main, args=arguments(__doc__, ("prepared",)))
