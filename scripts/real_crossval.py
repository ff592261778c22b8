"""Train on one real study, test on another, every way round: from scratch and fine-tuned.

The experiment behind the README's "Train on your own studies" numbers: for
each ordered pair of patients (A, B) under ROOT, the pipeline's own functions
prepare the studies with the explicit split ``train: [A], val: [], test: [B]``
(``prepare.source: dicom`` or ``nifti``), degrade them with params.yaml's
``degrade`` params, train one model with params.yaml's ``train`` params (from a
random start, and from ``--init``, e.g. the default phantom-trained model), and
score it and bicubic on B exactly as the ``evaluate`` stage does. It prints a
Markdown table (PSNR/SSIM gain over bicubic on the whole image and in the
contoured heart box) and writes it with the raw numbers to ``--out``.

    python scripts/real_crossval.py ../shared/data/sunnybrook --init models/mse-NN.keras

Nothing in the repository is written except ``--out``; the work folder
(``--work``, a temporary folder by default) holds the datasets and models.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from cardiac_sr.degrade import degrade
from cardiac_sr.errors import CardiacSRError
from cardiac_sr.evaluate import evaluate_method
from cardiac_sr.params import Prepare, load_params, section
from cardiac_sr.prepare import prepare, scan
from cardiac_sr.train import train_model


def gains(res: dict, bic: dict, suffix: str = "") -> dict:
    """PSNR, SSIM and ROI PSNR gains of one method's ``evaluate`` summary over bicubic's."""
    return {f"{k}_gain{suffix}": res[k]["mean"] - bic[k]["mean"] for k in ("psnr", "ssim", "roi_psnr")}


def run_pair(params: dict, source: str, root: str, train_id: str, test_id: str, init: Path | None,
             model: str, work: Path, ensemble: bool = False) -> list[dict]:
    """Prepare and degrade (train_id -> test_id), train ``model`` from scratch and from ``init``, score on
    test_id (and, with ``ensemble``, score its 8-fold self-ensemble too)."""
    prep = {**params["prepare"], "source": source, "path": root,
            "split": {"train": [train_id], "val": [], "test": [test_id]}}
    data = work / f"{train_id}-to-{test_id}"
    scale = section(params, "degrade").scale
    prepare(prep, scale, data / "prepared")
    degrade(params["degrade"], data / "prepared", data / "degraded")

    def score(method: str, **kw) -> dict:  # the evaluate stage's scoring of the test study (no external set)
        return evaluate_method(method, data / "prepared", data / "degraded", models_dir=data / "models",
                               out_dir=data / "metrics", scale=scale, external_dir=None, **kw)

    bic = score("bicubic")
    rows = []
    for start in ["scratch"] + (["init"] if init else []):
        p = copy.deepcopy(params)
        p["train"]["init"] = f"init/{init.name}" if start == "init" else None
        tag = f"{model}-{start}"
        summary = train_model(model, p, data / "prepared", data / "degraded", model_path=data / "models" / f"{tag}.keras",
                              live_dir=data / "live" / tag, summary_path=data / "train" / f"{tag}.json",
                              scratch_dir=data / "scratch")
        res = score(tag)
        rows.append({
            "train": train_id, "test": test_id, "start": start, "model": model,
            "slices": res["slices"], "train_seconds": summary["train_seconds_this_run"],
            "psnr": res["psnr"]["mean"], "psnr_bicubic": bic["psnr"]["mean"],
            **gains(res, bic),
            "roi_contoured_slices": res["slices"] - res["roi_fallback_slices"],
        })
        if ensemble:
            rows[-1].update(gains(score(tag, ensemble=True, name=f"{tag}-self-ensemble"), bic, "_ensemble"))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def header(argv: list[str], params: dict) -> str:
    """What produced the table: command, date, machine and the train params used."""
    import datetime
    import platform

    t = params["train"]
    return (f"# Train on one real study, test on another\n\n"
            f"`python scripts/real_crossval.py {' '.join(argv)}`, run {datetime.date.today()} on "
            f"{platform.machine()} with {os.cpu_count()} CPU cores; train params from params.yaml: {t['epochs']} epochs "
            f"x {t['steps_per_epoch']} steps x batch {t['batch_size']}, {t['patch_size']} px patches, learning rate "
            f"{t['learning_rate']}, weight average (train.ema) {t.get('ema', 0.0)}; degradation {params['degrade']['method']} x{params['degrade']['scale']}. "
            f"Gains over bicubic on the test study, scored by the pipeline's `evaluate` code; ROI = the contoured "
            f"heart box where there are contours, else the central half of the image.\n\n")


def markdown(rows: list[dict], init: str | None) -> str:
    ens = all("psnr_gain_ensemble" in r for r in rows)
    extra = " PSNR gain, self-ensemble (dB) | ROI PSNR gain, self-ensemble (dB) |" if ens else ""
    lines = ["| train on | test on | start | test images | PSNR (dB) | bicubic (dB) | PSNR gain (dB) | SSIM gain "
             "| ROI PSNR gain (dB) |" + extra + " train s |",
             "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if ens else "") + "---|"]
    for r in rows:
        start = "random" if r["start"] == "scratch" else f"fine-tuned from {init}"
        cells = (f" {r['psnr_gain_ensemble']:+.2f} | {r['roi_psnr_gain_ensemble']:+.2f} |" if ens else "")
        lines.append(f"| {r['train']} | {r['test']} | {start} | {r['slices']} | {r['psnr']:.2f} | "
                     f"{r['psnr_bicubic']:.2f} | {r['psnr_gain']:+.2f} | {r['ssim_gain']:+.4f} | "
                     f"{r['roi_psnr_gain']:+.2f} |{cells} {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="DICOM root (one folder per patient) or folder of NIfTI volumes")
    ap.add_argument("--source", default="dicom", choices=("dicom", "nifti"))
    ap.add_argument("--model", default="mse-NN", help="which of the four models (default mse-NN)")
    ap.add_argument("--init", type=Path, help="a .keras generator to fine-tune from (e.g. models/mse-NN.keras)")
    ap.add_argument("--params", default="params.yaml", help="train/degrade/prepare params (default params.yaml)")
    ap.add_argument("--work", type=Path, help="work folder for datasets and models (default: a temporary one)")
    ap.add_argument("--self-ensemble", action="store_true",
                    help="also score each model's 8-fold self-ensemble (8x the inference time)")
    ap.add_argument("--out", type=Path, default=Path("docs/real_crossval.md"), help="the table (Markdown) + .json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        params = load_params(args.params)
        root = str(Path(args.root).resolve())
        scanned = scan(Prepare.of({**params["prepare"], "source": args.source, "path": root}, "prepare"))
        ids = sorted(pid for pid, _ in scanned)  # headers only: the images are read by each pair's prepare
        if len(ids) < 2:
            raise CardiacSRError(f"{args.root}: found {len(ids)} patient(s); need at least 2")
        work = args.work or Path(tempfile.mkdtemp(prefix="cardiac-sr-crossval-"))
        work = work.resolve()
        out = args.out.resolve()
        init = args.init.resolve() if args.init else None
        if init is not None and not init.is_file():
            raise CardiacSRError(f"--init {args.init}: file not found")
        (work / "init").mkdir(parents=True, exist_ok=True)  # train.init must live in ./init (see train.init_path)
        if init is not None:
            shutil.copy2(init, work / "init" / init.name)
        here = os.getcwd()
        os.chdir(work)
        try:
            rows = [row for a in ids for b in ids if a != b
                    for row in run_pair(params, args.source, root, a, b, init, args.model, work,
                                       args.self_ensemble)]
        finally:
            os.chdir(here)
    except CardiacSRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = markdown(rows, args.init)
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header(sys.argv[1:] if argv is None else argv, params) + table)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
