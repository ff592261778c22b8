"""DVC stage `prepare`: studies -> data/prepared (see cardiac_sr.prepare)."""

from _common import arguments, run

from cardiac_sr.params import section
from cardiac_sr.prepare import prepare


def main(params: dict, args) -> None:
    external = section(params, "evaluate").external
    info = prepare(section(params, "prepare"), section(params, "degrade").scale, args.prepared,
                   allow_empty_test=external is not None)
    print("slices per split:", info["splits"])


if __name__ == "__main__":
    run(main, args=arguments(__doc__, ("prepared",)))
