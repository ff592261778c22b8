"""Format the results of DVC experiments (scripts/acdc_experiments.sh, scripts/real_experiments.sh).

Only formats: every number comes from an experiment's own metrics and params, as
`dvc exp show --json` reports them (each with its dvc.lock in the experiment's commit).

    python scripts/exp_results.py table acdc-n80 acdc-ft80        # Markdown: gains over bicubic
    python scripts/exp_results.py curve acdc- --out docs/acdc_patients.png   # gain vs training patients
    python scripts/exp_results.py acdc-order                       # the order in which ACDC subsets take patients

``--model`` (default mse-NN) is the model the experiments trained and evaluated; ``--json FILE`` reads a
saved `dvc exp show --json` instead of running it.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ACDC_SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1}  # profiles/acdc.args
ACDC_SEED = 42                                        # params.yaml prepare.seed
ORDER_SEED = 2026                                     # the order in which the nested subsets take training patients


def acdc_split(root: Path | None = None) -> dict[str, list[str]]:
    """profiles/acdc.args' split of the ACDC patients under ``root`` (default: $ACDC_ROOT, else
    ../shared/data/acdc-train) with prepare.split_patients and seed 42, the training patients in the
    seeded order of the nested subsets."""
    sys.path.insert(0, str(ROOT / "src"))
    from cardiac_sr.prepare import split_patients

    root = Path(root or os.environ.get("ACDC_ROOT") or ROOT.parent / "shared" / "data" / "acdc-train")
    ids = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("patient"))
    assigned = split_patients(ids, ACDC_SPLIT, ACDC_SEED)
    out = {name: [p for p in ids if assigned[p] == name] for name in ACDC_SPLIT}
    random.Random(ORDER_SEED).shuffle(out["train"])
    return out


def experiments(show: list) -> dict[str, dict]:
    """``{name: {"params": params.yaml, "metrics": {file: data}}}`` from `dvc exp show --json`."""
    out = {}
    for commit in show:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                if rev.get("name") and data:
                    out[rev["name"]] = {
                        "params": data["params"]["params.yaml"]["data"],
                        "metrics": {f: m.get("data", {}) for f, m in data.get("metrics", {}).items()}}
    return out


def row(name: str, exp: dict, model: str) -> dict:
    """One experiment's scores of ``model`` and bicubic, test split and (where there is one) external set."""
    res, bic = exp["metrics"][f"metrics/models/{model}.json"], exp["metrics"]["metrics/models/bicubic.json"]
    p = exp["params"]
    split = p["prepare"]["split"]
    own = (p.get("models") or {}).get(model) or {}  # models.<name> overrides train for this model
    cfg = {**p["train"], **own}
    out = {"name": name, "train": split["train"], "init": cfg.get("init"),
           "degradation": p["degrade"]["method"], "source": p["prepare"]["source"],
           # experiments before train.schedule existed trained at a constant rate
           "training": f"{cfg['epochs']} epochs, lr {cfg['learning_rate']:g} {cfg.get('schedule', 'constant')}"
                       # train.keep_init (WiSE-FT), absent in experiments run before it existed
                       + (f", keep_init {cfg['keep_init']:g}" if cfg.get("keep_init") else "")}
    for key, r, b in (("test", res, bic), ("external", res.get("external"), bic.get("external"))):
        if r and r.get("psnr", {}).get("mean") is not None:
            out[key] = {"psnr": r["psnr"]["mean"], "bicubic": b["psnr"]["mean"],
                        "gain": r["psnr"]["mean"] - b["psnr"]["mean"], "ssim": r["ssim"]["mean"],
                        "roi_gain": r["roi_psnr"]["mean"] - b["roi_psnr"]["mean"]}
    return out


def n_train(r: dict) -> int | str:
    return len(r["train"]) if isinstance(r["train"], list) else f"{r['train']:g} of the patients"


def markdown(rows: list[dict]) -> str:
    lines = ["| experiment | training patients | start | degradation | training | held-out PSNR (dB) | gain (dB) "
             "| SSIM | ROI gain (dB) | external PSNR (dB) | gain (dB) | SSIM | ROI gain (dB) |", "|---" * 13 + "|"]
    for r in rows:
        cells = []
        for key in ("test", "external"):
            s = r.get(key)
            cells += ([f"{s['psnr']:.2f}", f"**{s['gain']:+.2f}**", f"{s['ssim']:.4f}", f"{s['roi_gain']:+.2f}"]
                      if s else ["-"] * 4)
        start = f"fine-tuned ({r['init']})" if r["init"] else "scratch"
        lines.append(f"| {r['name']} | {n_train(r)} | {start} | {r['degradation']} | {r['training']} | " +
                     " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CURVE_TRAINING = "15 epochs, lr 0.001 constant"  # the curve compares patients at the default training only


def curve_points(rows: list[dict], key: str, fine_tuned: bool, patients: dict[str, int] | None = None,
                 training: str = CURVE_TRAINING) -> list:
    """(training patients, gain) on set ``key`` of the runs the curve compares: one start, the seed's
    degradation and one training recipe, the default one unless ``training`` names another (other recipes
    are rows of the table, not points of the curve)."""
    count = {r["name"]: len(r["train"]) for r in rows if isinstance(r["train"], list)} | (patients or {})
    return sorted((count[r["name"]], r[key]["gain"]) for r in rows
                  if key in r and r["name"] in count and bool(r["init"]) == fine_tuned
                  and r["degradation"] == "blur_bicubic" and r["training"] == training)


def curve(rows: list[dict], out: Path, baseline: dict[str, float] | None = None,
          patients: dict[str, int] | None = None) -> Path:
    """Gain over bicubic against the number of training patients, scratch and fine-tuned, held-out and
    external; ``baseline``: the phantom model's gains (0 real patients), drawn as dashed lines; ``patients``:
    the number of training patients of experiments whose split is given as fractions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, key, title in ((axes[0], "test", "held-out ACDC patients"), (axes[1], "external", "Sunnybrook (external)")):
        for start, colour, training in (("scratch", "C0", CURVE_TRAINING),
                                         ("fine-tuned from the phantom model", "C1", CURVE_TRAINING),
                                         ("fine-tuned, half the start kept (train.keep_init 0.5)", "C2",
                                          CURVE_TRAINING + ", keep_init 0.5")):
            pts = curve_points(rows, key, start != "scratch", patients, training)
            if pts:
                ax.plot(*zip(*pts), marker="o" if len(pts) > 1 else "D", color=colour, label=start)
        if baseline and key in baseline:
            ax.axhline(baseline[key], color="k", ls="--", lw=1, label="phantom model alone (0 real patients)")
        ax.set_xscale("log")
        ax.set_xlabel("ACDC training patients")
        ax.set_ylabel("PSNR gain over bicubic (dB)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("table", "curve", "acdc-order", "acdc-split"))
    ap.add_argument("names", nargs="*", help="experiment names (curve: a name prefix)")
    ap.add_argument("--model", default="mse-NN")
    ap.add_argument("--json", type=Path, help="a saved `dvc exp show --json -A` (default: run it)")
    ap.add_argument("--out", type=Path, default=Path("docs/acdc_patients.png"))
    ap.add_argument("--baseline", type=float, nargs=2, metavar=("HELD_OUT", "EXTERNAL"),
                    help="curve: the phantom model's gains (dB) on the same test sets")
    ap.add_argument("--patients", nargs="*", default=[], metavar="NAME=N",
                    help="curve: training patients of an experiment split by fractions (e.g. acdc-mse-NN=80)")
    args = ap.parse_args(argv)
    if args.what in ("acdc-order", "acdc-split"):
        split = acdc_split()
        print(",".join(split["train"]) if args.what == "acdc-order" else
              f"val {','.join(split['val'])}\ntest {','.join(split['test'])}")
        return 0
    show = json.loads(args.json.read_text() if args.json else subprocess.run(
        ["dvc", "exp", "show", "--json", "-A"], check=True, capture_output=True, text=True).stdout)
    found = experiments(show)
    if args.what == "table":
        missing = [n for n in args.names if n not in found]
        if missing:
            print(f"error: no experiment named {missing[0]} (dvc exp list -A)", file=sys.stderr)
            return 2
        print(markdown([row(n, found[n], args.model) for n in args.names]), end="")
        return 0
    prefix = args.names[0] if args.names else ""
    rows = [row(n, e, args.model) for n, e in sorted(found.items()) if n.startswith(prefix)]
    baseline = dict(zip(("test", "external"), args.baseline)) if args.baseline else None
    patients = {name: int(n) for name, n in (item.split("=") for item in args.patients)}
    print("figure:", curve(rows, args.out, baseline, patients))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
