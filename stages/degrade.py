"""DVC stage `degrade`: data/prepared -> data/degraded (see cardiac_sr.degrade)."""

from _common import run

from cardiac_sr.degrade import degrade
from cardiac_sr.params import get


def main(params: dict) -> None:
    info = degrade(get(params, "degrade"), "data/prepared", "data/degraded")
    print("shapes:", info["shapes"])


if __name__ == "__main__":
    run(main)
