"""The results: the four-model table, the selected model, comparisons and figures.

* :func:`write_table` -> ``metrics/table.md`` and ``metrics/table.csv``: one row
  each for bicubic, nearest (and zerofill for ``kspace`` data) and Models 1-4;
* :func:`select_model` -> ``models/selected.keras`` and ``metrics/selected.json``
  for the top-level params ``loss`` and ``upsampling``;
* :func:`compare` -> the ``cardiac-sr compare A B`` text, laid out like
  ``dvc metrics diff --md``;
* :func:`write_figures` -> training curves, PSNR distributions, a
  comparison panel of fixed test slices, and a cine loop (animated GIF) of
  one test slice over all phases.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import shutil
from pathlib import Path

import numpy as np

from .errors import CardiacSRError
from .fileio import atomic_file, write_json
from .names import (DEGRADED_DIR, EXTERNAL, EXTERNAL_DIR, LIVE_DIR, LOSSES, METRICS_DIR, MODEL_NAMES, MODELS_DIR,
                    PLOTS_DIR, PREPARED_DIR, SEED_NAMES, UPSAMPLINGS, split_model_name, timings_file)
from .params import Degrade, Params

# (key, column title, format) of the table
COLUMNS = [
    ("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"),
    ("roi_psnr", "ROI PSNR (dB)", "{:.2f}"), ("roi_ssim", "ROI SSIM", "{:.4f}"),
    ("perceptual", "VGG dist.", "{:.1f}"), ("checkerboard", "checkerboard (dB)", "{:.1f}"),
    ("tpsnr", "temporal PSNR (dB)", "{:.2f}"), ("roi_tpsnr", "ROI temporal PSNR (dB)", "{:.2f}"),
]
# the external test set's columns (evaluate.external), next to the internal ones
EXTERNAL_COLUMNS = [("psnr", "ext. PSNR (dB)", "{:.2f}"), ("ssim", "ext. SSIM", "{:.4f}"),
                    ("roi_psnr", "ext. ROI PSNR (dB)", "{:.2f}"), ("perceptual", "ext. VGG dist.", "{:.1f}")]


def load_result(method: str, metrics_dir: str | Path = METRICS_DIR) -> dict:
    path = Path(metrics_dir) / "models" / f"{method}.json"
    if not path.is_file():
        valid = ", ".join(["bicubic", "nearest", "zerofill", *MODEL_NAMES])
        raise CardiacSRError(f"{path}: no metrics for {method!r} (run `dvc repro`; methods: {valid})")
    return json.loads(path.read_text())


def load_timings(metrics_file: str | Path) -> dict:
    """The timings kept beside a metrics file (:func:`cardiac_sr.names.timings_file`); {} where there are none."""
    path = timings_file(metrics_file)
    return json.loads(path.read_text()) if path.is_file() else {}


def table_methods(degrade_method: str) -> list[str]:
    baselines = ["bicubic", "nearest"] + (["zerofill"] if degrade_method == "kspace" else [])
    return baselines + list(MODEL_NAMES)


def _gain(value, reference):
    return None if value is None or reference is None else value - reference


def table_rows(methods: list[str], metrics_dir=METRICS_DIR) -> list[dict]:
    """One dict per method: names, parameters, metric means, times, gain over bicubic
    (``ext_*`` keys for the external test set when there is one)."""
    bicubic = load_result("bicubic", metrics_dir)
    bic = bicubic["psnr"]["mean"]
    rows = []
    for m in methods:
        res = load_result(m, metrics_dir)
        row = {"method": m, "name": SEED_NAMES.get(m, "baseline"), "loss": "-", "upsampling": "-",
               "parameters": 0, "epoch_seconds": None}
        if m in MODEL_NAMES:
            row["loss"], row["upsampling"] = split_model_name(m)
            train_file = Path(metrics_dir) / "train" / f"{m}.json"
            if train_file.is_file():
                t = json.loads(train_file.read_text())
                row["parameters"], row["epoch_seconds"] = t["parameters"], load_timings(train_file).get("epoch_seconds")
        for key, _, _ in COLUMNS:
            row[key], row[f"{key}_std"] = res[key]["mean"], res[key]["std"]
            row[f"{key}_ci95"] = res[key]["ci95"]
        row["psnr_gain_db"] = _gain(row["psnr"], bic)
        row["inference_ms"] = load_timings(Path(metrics_dir) / "models" / f"{m}.json").get("inference_ms_per_slice")
        row["slices"], row["patients"] = res["slices"], res["patients"]
        if "external" in res:
            ext = res["external"]
            for key, _, _ in EXTERNAL_COLUMNS:
                row[f"ext_{key}"] = ext[key]["mean"]
            row["ext_psnr_gain_db"] = _gain(ext["psnr"]["mean"], bicubic["external"]["psnr"]["mean"])
            row["ext_slices"], row["ext_patients"] = ext["slices"], ext["patients"]
        rows.append(row)
    return rows


def _fmt(fmt: str, value) -> str:
    return "-" if value is None else fmt.format(value)


def format_markdown(rows: list[dict], header: str = "") -> str:
    external = "ext_psnr" in rows[0]
    head = ["method", "seed name", "loss", "upsampling", "parameters"] + [c[1] for c in COLUMNS] + \
           ["PSNR gain vs bicubic (dB)"] + \
           ([c[1] for c in EXTERNAL_COLUMNS] + ["ext. PSNR gain vs bicubic (dB)"] if external else []) + \
           ["train s/epoch", "inference ms/slice"]
    lines = [header.rstrip() + "\n" if header else "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], r["name"], r["loss"], r["upsampling"], f"{r['parameters']:,}" if r["parameters"] else "-"]
        for key, _, fmt in COLUMNS:
            cells.append("-" if r[key] is None else f"{fmt.format(r[key])} ± {fmt.format(r[key + '_std'])}")
        cells.append(_gain_cell(r, "psnr_gain_db"))
        if external:
            cells += [_fmt(fmt, r[f"ext_{key}"]) for key, _, fmt in EXTERNAL_COLUMNS]
            cells.append(_gain_cell(r, "ext_psnr_gain_db"))
        cells.append(f"{r['epoch_seconds']:.1f}" if r["epoch_seconds"] else "-")
        cells.append(_fmt("{:.1f}", r["inference_ms"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines).lstrip("\n") + "\n"


def _gain_cell(row: dict, key: str) -> str:
    gain = row[key]
    if gain is None:
        return "-"
    model = row["method"] != "bicubic" and row["loss"] != "-"
    return f"{gain:+.2f}" + (" (does **not** beat bicubic)" if model and gain <= 0 else "")


def write_table(params: Params, metrics_dir=METRICS_DIR) -> list[dict]:
    """Write ``table.md`` and ``table.csv`` from the per-method metrics."""
    deg, tr = params.need("degrade", "train")
    source = params.prepare.source if params.prepare else "?"
    rows = table_rows(table_methods(deg.method), metrics_dir)
    header = (f"Test split: {rows[0]['slices']} slices of {rows[0]['patients']} patients "
              f"(source: {source}), degradation {deg.method} x{deg.scale}. Mean ± std over slices; intensities in [0, 1], "
              f"data_range 1, Gaussian SSIM (sigma 1.5); ROI = heart bounding box; VGG dist. = VGG16 "
              f"block2_conv2 feature MSE on a 128 px heart crop; checkerboard = residual energy at "
              f"period-2/4 frequencies relative to bicubic (higher = more artefact); temporal PSNR = PSNR of "
              f"the change from one cardiac phase to the next against the true change (lower = more "
              f"flicker). Training: "
              f"batch {tr.batch_size}, {tr.patch_size} px patches, batch_norm {tr.batch_norm}, global_skip "
              f"{tr.global_skip}, up_init {tr.up_init}. Machine: {platform.machine()}, "
              f"{_cpu_count()} CPU cores. 95 % intervals over patients: metrics/models/<method>.json.\n")
    if params.evaluate.self_ensemble:
        header += ("\nThe four models are scored as their 8-fold self-ensemble (the mean over the flips and "
                   "rotations of the input; evaluate.self_ensemble), the baselines in one pass.\n")
    if "ext_psnr" in rows[0]:
        ext = params.evaluate.external
        header += (f"\nExternal test set (ext.): {rows[0]['ext_slices']} slices of {rows[0]['ext_patients']} "
                   f"patients from {ext.source if ext else None} data at {ext.path if ext else None}, prepared and degraded like the "
                   f"test split, never trained on.\n")
    Path(metrics_dir).mkdir(parents=True, exist_ok=True)
    with atomic_file(Path(metrics_dir) / "table.md") as tmp:
        tmp.write_text(format_markdown(rows, header))
    keys = ["method", "name", "loss", "upsampling", "parameters"] + \
           [k for key, _, _ in COLUMNS for k in (key, f"{key}_std")] + \
           ["psnr_gain_db", "epoch_seconds", "inference_ms", "slices", "patients"]
    if "ext_psnr" in rows[0]:
        keys += [f"ext_{key}" for key, _, _ in EXTERNAL_COLUMNS] + ["ext_psnr_gain_db", "ext_slices", "ext_patients"]
    with atomic_file(Path(metrics_dir) / "table.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()})
    return rows


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# ----------------------------------------------------------------------------- select / compare

def select_model(loss: str | None, up: str | None, models_dir=MODELS_DIR, metrics_dir=METRICS_DIR) -> dict:
    """Publish the model chosen by the top-level params ``loss`` and ``upsampling``."""
    for key, value, valid in (("loss", loss, LOSSES), ("upsampling", up, UPSAMPLINGS)):
        if value not in valid:
            raise CardiacSRError(
                f"params.yaml: unknown value {value!r} for '{key}'; valid values: {', '.join(valid)}. "
                "DVC removed models/selected.keras and metrics/selected.json before this stage ran; "
                "after fixing the value, `dvc repro select` (or `git checkout -- . && dvc checkout`) restores them")
    name = f"{loss}-{up}"
    src = Path(models_dir) / f"{name}.keras"
    if not src.is_file():
        raise CardiacSRError(f"{src}: not found; train it first (dvc repro train@{name})")
    res, bic = load_result(name, metrics_dir), load_result("bicubic", metrics_dir)
    with atomic_file(Path(models_dir) / "selected.keras", suffix=".keras") as tmp:
        shutil.copyfile(src, tmp)
    selected = {"model": name, "loss": loss, "upsampling": up}
    for key, _, _ in COLUMNS:
        selected[key] = _round(res[key]["mean"])
    selected["psnr_gain_over_bicubic_db"] = _round(_gain(res["psnr"]["mean"], bic["psnr"]["mean"]))
    if "external" in res:
        selected["external"] = {key: _round(res["external"][key]["mean"]) for key, _, _ in EXTERNAL_COLUMNS}
        selected["external"]["psnr_gain_over_bicubic_db"] = _round(
            _gain(res["external"]["psnr"]["mean"], bic["external"]["psnr"]["mean"]))
    write_json(Path(metrics_dir) / "selected.json", selected)
    return selected


def _round(value):
    return None if value is None else round(value, 6)


def compare(a: str, b: str, metrics_dir=METRICS_DIR) -> str:
    """Two methods' metrics side by side, laid out like ``dvc metrics diff --md``."""
    ra, rb = load_result(a, metrics_dir), load_result(b, metrics_dir)
    out = io.StringIO()
    out.write(f"| Path | Metric | {a} | {b} | Change |\n|---|---|---|---|---|\n")
    for name, res in ((a, ra), (b, rb)):  # timings live beside the metrics, not in them
        res["inference_ms_per_slice"] = load_timings(Path(metrics_dir) / "models" / f"{name}.json").get(
            "inference_ms_per_slice", float("nan"))
    for key, _, fmt in COLUMNS + [("inference_ms_per_slice", "", "{:.2f}")]:
        va = ra[key]["mean"] if isinstance(ra[key], dict) else ra[key]
        vb = rb[key]["mean"] if isinstance(rb[key], dict) else rb[key]
        out.write(f"| metrics/models | {key} | {fmt.format(va)} | {fmt.format(vb)} | {vb - va:+.4g} |\n")
    return out.getvalue()


# ----------------------------------------------------------------------------- figures

def write_figures(deg: Degrade, prepared_dir=PREPARED_DIR, degraded_dir=DEGRADED_DIR, models_dir=MODELS_DIR,
                  metrics_dir=METRICS_DIR, live_root=LIVE_DIR, out_dir=PLOTS_DIR,
                  external_dir=EXTERNAL_DIR) -> list[Path]:
    """Training curves, PSNR distributions and the comparison panel, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    # 1. training curves (dvclive logs): each loss on its own axis (perceptual ~1e2 and MSE ~1e-3 share none)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = {"mse": (axes[0], "MSE models: loss (pixel MSE on [0, 1])"),
              "perceptual": (axes[1], "perceptual models: loss (VGG features + pixel term)")}
    for i, m in enumerate(MODEL_NAMES):
        base = Path(live_root) / m / "plots" / "metrics"
        ax, title = panels[split_model_name(m)[0]]
        for rel, style, what in (("train/loss.tsv", "-", "train"), ("eval/loss.tsv", "--", "val")):
            if (base / rel).is_file():
                d = np.loadtxt(base / rel, delimiter="\t", skiprows=1, ndmin=2)
                ax.plot(d[:, 0] + 1, d[:, 1], style, marker="o", ms=3, color=f"C{i}", label=f"{m} {what}")
        ax.set_title(title, fontsize=10)
        if (base / "eval/psnr.tsv").is_file():
            d = np.loadtxt(base / "eval/psnr.tsv", delimiter="\t", skiprows=1, ndmin=2)
            axes[2].plot(d[:, 0] + 1, d[:, 1], marker="o", ms=3, color=f"C{i}", label=m)
    axes[2].set_title("validation PSNR (dB), all four", fontsize=10)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    bic = _val_bicubic_psnr(metrics_dir)
    if bic is not None:
        axes[2].axhline(bic, color="k", ls="--", lw=1, label="bicubic")
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "training_curves.png"))

    # 2. PSNR distributions over test slices
    methods = table_methods(deg.method)
    psnrs = {}  # split -> method -> PSNR per slice
    for m in methods:
        with open(Path(metrics_dir) / "per_slice" / f"{m}.csv") as fh:
            for r in csv.DictReader(fh):
                psnrs.setdefault(r.get("split", "test"), {}).setdefault(m, []).append(float(r["psnr"]))
    fig, axes = plt.subplots(1, len(psnrs), figsize=(10 * len(psnrs), 4), squeeze=False)
    for ax, (split, per_method) in zip(axes[0], psnrs.items()):
        ax.violinplot([per_method[m] for m in methods], showmedians=True)
        ax.set_xticks(range(1, len(methods) + 1), methods)
        ax.set_ylabel(f"PSNR per {split} slice (dB)")
        ax.set_title(f"PSNR distributions on the {split} {'split' if split == 'test' else 'test set'}")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "psnr_distribution.png"))

    # 3. comparison panel
    written.append(comparison_panel(prepared_dir, degraded_dir, models_dir, out_dir / "comparison.png",
                                    deg.scale, external_dir=external_dir))
    # 4. cine loop
    written.append(cine_loop(prepared_dir, degraded_dir, models_dir, out_dir / "cine_loop.gif",
                             external_dir=external_dir))
    return written


def _val_bicubic_psnr(metrics_dir) -> float | None:
    for m in MODEL_NAMES:
        f = Path(metrics_dir) / "train" / f"{m}.json"
        if f.is_file():
            return json.loads(f.read_text()).get("val_bicubic_psnr")
    return None


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path


def _figure_split(prepared_dir, degraded_dir, external_dir) -> tuple[str, Path, Path]:
    """(split, HR folder, LR folder) the figures show: the test split, or the external set when the test
    split is empty (one-patient data)."""
    from .dataset import load_split

    if len(load_split(prepared_dir, "test", "hr")):
        return "test", Path(prepared_dir), Path(degraded_dir)
    return EXTERNAL, Path(external_dir), Path(external_dir)


def comparison_panel(prepared_dir, degraded_dir, models_dir, path: Path, scale: int = 4, n_slices: int = 2,
                     external_dir=EXTERNAL_DIR) -> Path:
    """HR, LR, bicubic and the four models for fixed test slices: full view, heart zoom, error maps."""
    import matplotlib.pyplot as plt

    from .dataset import load_split
    from .degradation import upsample_bicubic
    from .inference import super_resolve
    from .metrics import roi_box
    from .models import load_generator

    split, folder, lr_folder = _figure_split(prepared_dir, degraded_dir, external_dir)
    hr, roi = load_split(folder, split, "hr"), load_split(folder, split, "roi")
    lr = load_split(lr_folder, split, "lr")
    # fixed slices: the ones with the largest heart masks at evenly spaced positions
    candidates = np.linspace(0, len(hr) - 1, 8).astype(int)
    picks = sorted(candidates, key=lambda i: -int(np.asarray(roi[i]).sum()))[:n_slices]
    cols = ["HR", "LR", "bicubic", *MODEL_NAMES]
    models = {m: load_generator(Path(models_dir) / f"{m}.keras") for m in MODEL_NAMES}
    fig, axes = plt.subplots(3 * n_slices, len(cols), figsize=(2.2 * len(cols), 2.3 * 3 * n_slices))
    for row, i in enumerate(picks):
        x = np.asarray(lr[i], np.float32)
        images = {"HR": np.asarray(hr[i]), "LR": np.kron(x, np.ones((scale, scale))),
                  "bicubic": upsample_bicubic(x, scale)}
        for m, model in models.items():
            images[m] = super_resolve(model, x[None], scale, batch_size=1, progress=False)[0]
        b = roi_box(np.asarray(roi[i]), margin=16)
        for c, name in enumerate(cols):
            img = np.clip(images[name], 0, 1)
            err = np.abs(img - images["HR"])
            for k, (view, cmap, vmax) in enumerate(((img, "gray", 1), (img[b], "gray", 1), (err[b], "magma", 0.15))):
                ax = axes[3 * row + k, c]
                ax.imshow(view, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                if row == 0 and k == 0:
                    ax.set_title(name, fontsize=9)
                if c == 0:
                    ax.set_ylabel([f"slice {i}", "heart zoom", "|error| (0-0.15)"][k], fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


CINE_CROP = 96  # HR pixels of the heart zoom in the cine loop (shown x2)


def cine_loop(prepared_dir, degraded_dir, models_dir, path: Path, crop: int = CINE_CROP,
              external_dir=EXTERNAL_DIR) -> Path:
    """Animated GIF of one test slice over all cardiac phases: HR | bicubic | the four models, heart zoom x2.

    The slice location is the test cine with the largest mean heart mask (mid-ventricle).
    """
    from .dataset import load_split, read_manifest
    from .figures import write_cine_gif
    from .inference import super_resolve
    from .metrics import centred_crop, roi_box
    from .models import load_generator

    split, folder, lr_folder = _figure_split(prepared_dir, degraded_dir, external_dir)
    manifest = [r for r in read_manifest(folder) if r["split"] == split]
    hr, roi = load_split(folder, split, "hr"), load_split(folder, split, "roi")
    cines: dict = {}
    for i, r in enumerate(manifest):
        cines.setdefault((r["patient"], int(r["slice"])), []).append((int(r["phase"]), i))
    key = max(sorted(cines), key=lambda k: np.mean([np.asarray(roi[i]).sum() for _, i in cines[k]]))
    idx = [i for _, i in sorted(cines[key])]
    box = roi_box(np.any(np.asarray(roi[idx]), axis=0), margin=8)
    win = centred_crop(box, hr.shape[1:], min(crop, *hr.shape[1:]))
    columns = [(f"HR {key[0]} slice {key[1]}", np.asarray(hr[idx])), ("bicubic", np.asarray(load_split(lr_folder, split, "bicubic")[idx]))]
    lr = np.asarray(load_split(lr_folder, split, "lr")[idx], np.float32)
    scale = hr.shape[-1] // lr.shape[-1]
    for m in MODEL_NAMES:
        model = load_generator(Path(models_dir) / f"{m}.keras")
        columns.append((m, super_resolve(model, lr, scale, batch_size=len(lr), progress=False)))  # one call
    columns = [(name, frames[:, win[0], win[1]]) for name, frames in columns]
    return write_cine_gif(columns, path, zoom=2)
