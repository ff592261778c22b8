"""The ``cardiac-sr`` command line.

Every subcommand is a thin layer over the library; errors a user can cause
are printed as one line (``cardiac-sr: error: <file>: <problem>``) with exit
status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .errors import CardiacSRError
from .names import PREDICT_MODEL

log = logging.getLogger("cardiac_sr")

EPILOG = """\
The pipeline itself runs through DVC, with params in params.yaml:
`dvc repro` (prepare -> degrade -> train -> evaluate -> table), or one stage,
e.g. `dvc repro prepare`.  These subcommands are for your own scans and results.
"""


def _at_least(minimum: int):
    """argparse type: an integer >= ``minimum`` (a bad value is a one-line usage error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small (at least {minimum})")
        return value
    return parse


QUIET = False  # -q/--quiet: warnings and errors only, no progress bars


def _setup_logging(verbose: bool, quiet: bool = False) -> None:
    global QUIET
    QUIET = quiet
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("tensorflow", "tf2onnx", "absl"):  # retracing notices, converter chatter
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.ERROR)


def _bars() -> bool:
    """Progress bars where a person watches (stderr is a terminal), not in logs, pipes, CI or with --quiet."""
    return sys.stderr.isatty() and not QUIET


def cmd_inspect(args) -> int:
    from .dicom import read_dicom
    from .nifti import read_nifti
    from .readers import detect_format

    fmt = args.format or detect_format(args.path)
    if fmt == "npy":
        raise CardiacSRError(f"{args.path}: a .npy stack has no patient metadata to inspect")
    studies = read_nifti(args.path) if fmt == "nifti" else read_dicom(args.path, contours=args.contours)
    rows = [s.summary() for s in studies]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'patient':<16} {'slices':>6} {'phases':>6} {'rows':>5} {'cols':>5} {'spacing row/col/slice (mm)':>28} {'intensity range':>20} {'ROI imgs':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        sp = "/".join(f"{v:.3f}" for v in r["spacing_mm"])
        rng = f"{r['intensity_min']:.4g}..{r['intensity_max']:.4g}"
        print(f"{r['patient']:<16} {r['slices']:>6} {r['phases']:>6} {r['rows']:>5} {r['columns']:>5} {sp:>28} {rng:>20} {r['roi_images']:>8}")
    return 0


def cmd_phantom_figure(args) -> int:
    from .phantom_figure import phantom_vs_real

    phantom_vs_real(args.real, args.out, seed=args.seed)
    print(f"wrote {args.out}")
    return 0


def cmd_compare(args) -> int:
    from .report import compare, load_result

    if args.json:
        print(json.dumps({name: load_result(name, args.metrics) for name in (args.a, args.b)}, indent=2))
        return 0
    print(compare(args.a, args.b, args.metrics), end="")
    return 0


def cmd_predict(args) -> int:
    import time

    from .card import read_raw_card
    from .predict import predict

    t0 = time.time()
    written = predict(args.input, args.output, args.model, fmt=args.format, overwrite=args.overwrite,
                      uncertainty=args.uncertainty, batch_size=args.batch_size, tile=args.tile,
                      preview=args.preview, ensemble=args.self_ensemble, progress=_bars(), precision=args.precision)
    if args.json:
        card = read_raw_card(args.model) or {}
        print(json.dumps({"input": args.input, "written": [str(p) for p in written], "model": args.model,
                          "model_name": card.get("model"), "self_ensemble": args.self_ensemble,
                          "precision": args.precision,
                          "seconds": round(time.time() - t0, 1)}, indent=2))
        return 0
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_assess(args) -> int:
    from .assess import assess, format_assessment

    result = assess(args.input, args.model, method=args.degrade, blur_sigma=args.blur_sigma, percentile=args.percentile,
                    batch_size=args.batch_size, ensemble=args.self_ensemble, progress=_bars(),
                    precision=args.precision)
    print(json.dumps(result, indent=2) if args.json else format_assessment(result), end="\n" if args.json else "")
    return 0


def cmd_export(args) -> int:
    from .predict import export

    print(f"wrote {export(args.model, args.output, args.format, args.overwrite)}")
    return 0


def _precision_argument(p: argparse.ArgumentParser) -> None:
    from .precision import PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default): the exact model, bit-identical to it; fp32-fast: the same function as a "
                        "graph with fewer operations (sub-pixel up-sampling, the output convolution as a 1x1 "
                        "convolution and a shifted sum), equal to fp32 up to float32 rounding, about 2x faster on "
                        "a CPU; bf16: convolutions in bfloat16, the bicubic path and the output sum in float32, "
                        "faster on CPUs with AVX512-BF16/AMX; bf16-fast: both (costs in quality measured with "
                        "assess: docs/operations.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cardiac-sr",
        description="x4 super-resolution of short-axis cine bSSFP MR: data, models and evaluation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"cardiac-sr {__version__}")
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", help="debug logging (TensorFlow's too)")
    loud.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("inspect", help="summarise cine studies (DICOM folder/root or NIfTI file/folder)",
                       description="Print, per patient: id, slices, phases, rows, columns, spacing "
                                   "(row, column, slice) in mm, intensity range and images with an ROI contour.")
    p.add_argument("path", help="a DICOM study folder, a root of patient folders, or a NIfTI file/folder")
    p.add_argument("--format", choices=["dicom", "nifti"], help="input format (default: detected)")
    p.add_argument("--contours", help="Sunnybrook contour folder (default: <path>/contours if present)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("phantom-figure", help="figure comparing phantom slices with real studies",
                       description="Phantom slices next to real slices at the same display window, with "
                                   "intensity histograms and radial power spectra.")
    p.add_argument("--real", default="../shared/data/sunnybrook", help="real DICOM root")
    p.add_argument("--out", default="docs/phantom_vs_real.png")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_phantom_figure)

    p = sub.add_parser("compare", help="two methods' test metrics side by side (dvc metrics diff --md layout)",
                       description="Compare two evaluated methods from metrics/models/<method>.json: any of "
                                   "bicubic, nearest, zerofill, perceptual-TS, perceptual-NN, mse-TS, mse-NN. "
                                   "Change = B - A.")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--metrics", default="metrics", help="metrics folder (default: metrics)")
    p.add_argument("--json", action="store_true", help="print both methods' metrics as JSON")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "predict", help="super-resolve a study x4 in-plane (DICOM, NIfTI or .npy)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Super-resolve every slice and phase of INPUT with a trained model and write OUTPUT.\n\n"
                    "INPUT: a DICOM series folder or a root of studies, a 3D/4D NIfTI file or a folder of them\n"
                    "(ACDC, M&Ms; label maps *_gt* are skipped), or a .npy stack.\n"
                    "OUTPUT: *.nii / *.nii.gz (NIfTI: the input's geometry and storage; from DICOM, the patient\n"
                    "geometry as dcm2niix writes it), *.npy, or a folder name: a DICOM series (new UIDs,\n"
                    "Rows/Columns/PixelSpacing/ImagePositionPatient updated) for a DICOM input, one NIfTI per\n"
                    "input volume (same names) for a folder of NIfTI volumes.\n"
                    "Intensities come back in the input's scale and dtype. The field of view keeps its place.",
        epilog="example: cardiac-sr predict ../shared/data/sunnybrook/SCD0000101 -o /tmp/sr101 --uncertainty")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help="output file (.nii.gz/.nii/.npy) or DICOM folder")
    p.add_argument("--model", default=PREDICT_MODEL,
                   help=f"a trained .keras generator, loaded in safe mode (default: {PREDICT_MODEL}, the model "
                        "that gains the most on real scans, README 'Results'; models/selected.keras is the "
                        "pipeline's selection); the log names the model used")
    p.add_argument("--json", action="store_true", help="print what was written, the model and the time as JSON")
    p.add_argument("--format", choices=["dicom", "nifti", "npy"], help="output format (default: from OUTPUT's name)")
    switches = {
        "--uncertainty": "also write OUTPUT_uncertainty (std over the 8 flips/rotations, intensity units) and "
                         "OUTPUT_warning (1 where the std exceeds 2%% of the 99.5th-percentile intensity)",
        "--self-ensemble": "write the mean of the model's outputs for the 8 flips/rotations of the input (EDSR+; "
                           "8x the time; +0.1 to +0.2 dB for mse-NN on real Sunnybrook cine: README 'Results')",
        "--overwrite": "replace OUTPUT if cardiac-sr predict wrote it (a NIfTI/.npy file carrying its mark, or a "
                       "folder of its outputs); anything else, and the input itself, is never replaced",
    }
    for flag, text in switches.items():
        p.add_argument(flag, action="store_true", help=text)
    p.add_argument("--preview", metavar="GIF",
                   help="also write an animated GIF of the middle slice over all cardiac phases, input next to "
                        "super-resolved (the first study's, for a root of several)")
    p.add_argument("--batch-size", type=_at_least(1), default=8, help="images per model call (default 8)")
    from .inference import MIN_TILE

    p.add_argument("--tile", type=_at_least(MIN_TILE), default=256,
                   help=f"LR tile size bounding memory for large slices (default 256, at least {MIN_TILE})")
    _precision_argument(p)
    p.set_defaults(func=cmd_predict, tensorflow=True)

    p = sub.add_parser(
        "assess", help="degrade your own HR study, super-resolve it, score model vs bicubic",
        description="For high-resolution studies of your own: degrade them as the `degrade` stage does, "
                    "super-resolve, and print PSNR/SSIM (full image; ROI where contours exist) of the model "
                    "next to bicubic, per patient and overall, with `detail r` (correlation of the detail the "
                    "model adds to bicubic with the true detail) and `scale*` (the factor on that detail that "
                    "would fit best; below 1 the model invents more detail than the images have). "
                    "Intensities normalised per volume as in `prepare`.")
    p.add_argument("input", help="DICOM folder/root (Sunnybrook contours are used when present), NIfTI file, or a "
                                 "folder of NIfTI volumes (ACDC/M&Ms label maps *_gt* are the ROI)")
    p.add_argument("--model", default=PREDICT_MODEL, help=f"a trained .keras generator (default: {PREDICT_MODEL})")
    p.add_argument("--degrade", choices=["blur_bicubic", "kspace"],
                   help="degradation (default: the one the model was trained for, from its card)")
    p.add_argument("--blur-sigma", type=float,
                   help="Gaussian sigma for blur_bicubic (HR pixels; default: the model's own, from its card)")
    p.add_argument("--percentile", type=float,
                   help="normalisation percentile (default: the model's own, from its card)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="score the mean of the model's outputs for the 8 flips/rotations (as predict --self-ensemble)")
    p.add_argument("--batch-size", type=_at_least(1), default=8)
    _precision_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_assess, tensorflow=True)

    p = sub.add_parser("export", help="export a trained model for serving (SavedModel or ONNX)",
                       description="Write a TensorFlow SavedModel (TensorFlow Serving) or an ONNX file (ONNX "
                                   "Runtime). Input: LR images (batch, h, w, 1) in [0, 1]; output x4, with the "
                                   "bicubic global skip inside the graph.")
    p.add_argument("--model", default=PREDICT_MODEL, help=f"a trained .keras generator (default: {PREDICT_MODEL})")
    p.add_argument("--format", choices=["savedmodel", "onnx"], default="savedmodel")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export, tensorflow=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    _setup_logging(args.verbose, args.quiet)
    try:
        if getattr(args, "tensorflow", False):
            from .runtime import start_tensorflow

            start_tensorflow()
        return int(args.func(args) or 0)
    except CardiacSRError as exc:
        print(f"cardiac-sr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"cardiac-sr: {exc}" if str(exc) else "cardiac-sr: interrupted; outputs are written to a temporary "
              "name and renamed when complete, so nothing half-written was left", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cardiac-sr inspect --json | head`: the reader left, which is not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
