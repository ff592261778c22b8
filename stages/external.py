"""DVC stage `external`: the external test set (evaluate.external) -> data/external (see cardiac_sr.external)."""

from _common import arguments, run

from cardiac_sr.external import build_external
from cardiac_sr.params import Params


def main(params: Params, args) -> None:
    prep, degrade = params.need("prepare", "degrade")
    info = build_external(params.evaluate.external, prep, degrade, args.prepared, args.external)
    if info["external"] is None:
        print("external test set: off (evaluate.external is null)")
    else:
        print(f"external test set: {info['splits']['external']} slices of {len(info['patients']['external'])} "
              f"patients from {info['external']['path']}")


if __name__ == "__main__":
    run(main, args=arguments(__doc__, ("prepared", "external")))
