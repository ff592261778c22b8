"""DVC stage `prepare`: studies -> data/prepared (see cardiac_sr.prepare)."""

from _common import arguments, run

from cardiac_sr.external import external_config
from cardiac_sr.params import get
from cardiac_sr.prepare import prepare


def main(params: dict, args) -> None:
    external = external_config(get(params, "evaluate.external", None))
    info = prepare(get(params, "prepare"), int(get(params, "degrade.scale")), args.prepared,
                   allow_empty_test=external is not None)
    print("slices per split:", info["splits"])


if __name__ == "__main__":
    run(main, args=arguments(__doc__, ("prepared",)))
