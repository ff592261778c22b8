"""Benchmark: `cardiac-sr predict` on the CPU: images/s, share of the fp32 ceiling, peak memory per output.

Studies (a phantom cine stored as int16, as scanners store it):
  small   12 slices x 20 phases of 256 x 256 -> 1024 x 1024 (Sunnybrook's size; 3-4 min per format on 2 cores)
  large   30 slices x 40 phases of 512 x 512 -> 2048 x 2048 (10 GB of int16 output; about an hour per format)
For each output format (NIfTI .nii.gz and .npy from a NIfTI input, a DICOM series from a DICOM input),
`cardiac-sr predict` runs as its own process, as a user runs it; its wall time, its images (slices x
phases) per second and its peak resident memory (wait4's ru_maxrss) are reported.  The fp32 ceiling: the
generator's convolution FLOPs per image over the dense float32 matmul GFLOP/s measured in this run
(benchmarks/train_throughput.py); the ratio is the share of that ceiling that predict reaches, end to end
(reading, writing and the gzip included).

    python benchmarks/predict_throughput.py [--study small|large] [--formats nifti npy dicom]
                                            [--self-ensemble] [--phases N] [--model models/mse-NN.keras]
                                            [--precision fp32|fp32-fast|bf16|bf16-fast]

With another ``--precision`` the share is still of the fp32 ceiling for the exact model's FLOPs (how the
run compares with the exact path at its best; ``-fast`` graphs compute the same images with fewer operations,
cardiac_sr.precision, so their share can pass what the arithmetic alone would allow).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cardiac_sr.precision import PRECISIONS  # noqa: E402 (after the path insert)

STUDIES = {"small": (12, 20, 256), "large": (30, 40, 512)}
OUTPUTS = {"nifti": "sr.nii.gz", "npy": "sr.npy", "dicom": "sr_dicom"}


def phantom_int16(slices: int, phases: int, size: int):
    """A phantom study (slices, phases, size, size) as int16 (the scanner's storage) and its spacing.  Past 256 x
    256 and 20 phases it is the 256 x 256 phantom's first 4 phases repeated and its pixels doubled: the
    content does not change the cost, and rendering 1,200 large images would take longer than the benchmark."""
    import numpy as np

    from cardiac_sr.params import Phantom
    from cardiac_sr.phantom import PhantomGenerator

    big = size > 256 or phases > 20
    cfg = Phantom(slices=slices, phases=4 if big else phases, size=min(size, 256))
    study = PhantomGenerator(cfg, seed=0).study(0)
    image = np.rint(study.image / study.image.max() * 3000).astype(np.int16)
    spacing = study.spacing
    if big:
        image = np.resize(image, (slices, phases) + image.shape[2:])
        factor = size // image.shape[-1]
        image = image.repeat(factor, axis=2).repeat(factor, axis=3)
        spacing = (spacing[0] / factor, spacing[1] / factor, spacing[2])
    return image, spacing


def write_nifti(image, spacing, path: Path) -> None:
    import nibabel as nib
    import numpy as np

    affine = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    nib.save(nib.Nifti1Image(np.transpose(image, (2, 3, 0, 1)), affine), str(path))  # (x, y, slice, phase)


def write_dicom(image, spacing, folder: Path) -> None:
    """One MR image per (slice, phase), with the geometry and timing tags the reader needs."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir()
    series = pydicom.Dataset()  # the tags every image of the series shares
    series.Modality, series.PatientID, series.SOPClassUID = "MR", "BENCH", MRImageStorage
    series.SeriesInstanceUID, series.StudyInstanceUID = generate_uid(), generate_uid()
    series.ImageType = ["ORIGINAL", "PRIMARY", "M"]
    series.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    for s, t in ((s, t) for s in range(image.shape[0]) for t in range(image.shape[1])):
        ds = pydicom.Dataset()
        ds.update(series)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = MRImageStorage, ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.ImagePositionPatient = ["0", "0", f"{s * spacing[2]:.3f}"]
        ds.PixelSpacing = [f"{spacing[0]:.4f}", f"{spacing[1]:.4f}"]
        ds.SliceThickness, ds.SliceLocation = spacing[2], s * spacing[2]
        ds.TriggerTime, ds.InstanceNumber, ds.SeriesNumber = 40 * t, 1 + s * image.shape[1] + t, 1
        ds.set_pixel_data(image[s, t], photometric_interpretation="MONOCHROME2", bits_stored=16)
        ds.save_as(folder / f"{s:03d}_{t:03d}.dcm", enforce_file_format=True)


def run_predict(args: list[str], stop_after: float | None = None, count_in: Path | None = None):
    """(wall seconds, peak RSS in GiB, images written or None) of one `cardiac-sr predict` process; with
    ``stop_after``, stopped (SIGTERM) after that many seconds, its DICOM files so far counted in ``count_in``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cardiac_sr", "-q", "predict", *args],
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    done = None
    if stop_after is not None:
        try:
            proc.wait(timeout=stop_after)
        except subprocess.TimeoutExpired:
            if count_in is not None:
                done = sum(1 for _ in count_in.glob(".*tmp-*/*.dcm"))
            proc.terminate()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0 and not (stop_after is not None and code in (-15, 143)):
        raise SystemExit(f"predict {' '.join(args)} failed ({code})")
    return seconds, usage.ru_maxrss / 2**20, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=sorted(STUDIES), default="small")
    parser.add_argument("--formats", nargs="+", choices=sorted(OUTPUTS), default=["nifti", "npy", "dicom"])
    parser.add_argument("--self-ensemble", action="store_true", help="8-fold self-ensemble (8x the work)")
    parser.add_argument("--phases", type=int, help="fewer phases than the study's (memory per image and speed are "
                        "the same; the input, and with it the peak, is smaller)")
    parser.add_argument("--model", default=str(ROOT / "models" / "mse-NN.keras"))
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="predict --precision")
    parser.add_argument("--stop-after", type=float, help="stop each predict after this many seconds: its peak RSS "
                        "so far (reading, normalisation and the first chunks hold the peak: memory does not grow "
                        "after) and, for DICOM, its images/s")
    parser.add_argument("--workdir", help="where inputs and outputs go (default: a temporary folder, removed)")
    args = parser.parse_args()

    from cardiac_sr.runtime import start_tensorflow

    start_tensorflow()
    from cardiac_sr.inference import load_model
    from train_throughput import conv_flops, matmul_gflops

    slices, phases, size = STUDIES[args.study]
    phases = args.phases or phases
    peak = matmul_gflops()
    flops = conv_flops(load_model(args.model)[0], size) * (8 if args.self_ensemble else 1)
    n = slices * phases
    print(f"machine: {os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; dense float32 matmul "
          f"{peak:.0f} GFLOP/s; model {args.model}: {flops / 1e9:.0f} GFLOP per {size} x {size} image"
          f"{' (8-fold self-ensemble)' if args.self_ensemble else ''}, ceiling {peak * 1e9 / flops:.2f} images/s")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        image, spacing = phantom_int16(slices, phases, size)
        if {"nifti", "npy"} & set(args.formats):
            write_nifti(image, spacing, tmp / "in.nii.gz")
        if "dicom" in args.formats:
            write_dicom(image, spacing, tmp / "in_dicom")
        del image
        for fmt in args.formats:
            source = tmp / ("in_dicom" if fmt == "dicom" else "in.nii.gz")
            extra = (["--self-ensemble"] if args.self_ensemble else []) + ["--precision", args.precision]
            seconds, rss, done = run_predict([str(source), "-o", str(tmp / OUTPUTS[fmt]), "--model", args.model, *extra],
                                              args.stop_after, tmp if fmt == "dicom" else None)
            if args.stop_after is not None and seconds >= args.stop_after:
                rate = f"{done / seconds:.2f} images/s so far" if done else "rate not counted"
                print(f"{args.study} {slices} x {phases} x {size} x {size} -> {fmt:5s}"
                      f"{' (self-ensemble)' if args.self_ensemble else ''}: stopped after {seconds:.0f} s "
                      f"({done if done is not None else '?'} images written, {rate}), peak RSS {rss:.2f} GiB", flush=True)
                continue
            rate = n / seconds
            print(f"{args.study} {slices} x {phases} x {size} x {size} -> {fmt:5s} {args.precision}"
                  f"{' (self-ensemble)' if args.self_ensemble else ''}: {seconds:6.0f} s, "
                  f"{rate:.2f} images/s ({1000 / rate:.0f} ms each), {100 * rate * flops / (peak * 1e9):3.0f} % of "
                  f"the fp32 ceiling, peak RSS {rss:.2f} GiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
