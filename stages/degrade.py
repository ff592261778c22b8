"""DVC stage `degrade`: data/prepared -> data/degraded (see cardiac_sr.degrade)."""

from _common import arguments, run

from cardiac_sr.degrade import degrade
from cardiac_sr.params import Params


def main(params: Params, args) -> None:
    info = degrade(params.need("degrade"), args.prepared, args.degraded)
    print("shapes:", info["shapes"])


if __name__ == "__main__":
    run(main, args=arguments(__doc__, ("prepared", "degraded")))
