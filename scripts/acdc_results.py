"""The ACDC experiments' results (scripts/acdc_experiments.sh) as a table and a figure.

    python scripts/acdc_results.py --print-order      # the 80 training patients in the order subsets take them
    python scripts/acdc_results.py --print-split      # the val and test patients (prepare.split 0.8/0.1/0.1, seed 42)

Only formats: the numbers come from each experiment's metrics (`dvc exp show --json`).
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cardiac_sr.prepare import split_patients  # noqa: E402

ACDC = ROOT.parent / "shared" / "data" / "acdc-train"
SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1}   # profiles/acdc.args
SEED = 42                                          # params.yaml prepare.seed
ORDER_SEED = 2026                                  # the order in which the subsets take training patients


def acdc_split(root: Path = ACDC) -> dict[str, list[str]]:
    ids = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("patient"))
    assigned = split_patients(ids, SPLIT, SEED)
    out = {name: [p for p in ids if assigned[p] == name] for name in SPLIT}
    random.Random(ORDER_SEED).shuffle(out["train"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--print-order", action="store_true")
    ap.add_argument("--print-split", action="store_true")
    args = ap.parse_args(argv)
    split = acdc_split()
    if args.print_order:
        print(",".join(split["train"]))
    if args.print_split:
        print("val", ",".join(split["val"]))
        print("test", ",".join(split["test"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
