"""Benchmark: `cardiac-sr predict` speed on the CPU for a 256 x 256 cine study, and peak memory.

Uses models/selected.keras when it exists (else an untrained generator of the
default size) and a phantom study of 12 slices x 20 phases at 256 x 256,
super-resolved to 1024 x 1024 (what `predict` does to a real scan).

    python benchmarks/predict_throughput.py [--model PATH] [--slices 12] [--phases 20]
"""

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "selected.keras"))
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--phases", type=int, default=20)
    args = parser.parse_args()

    from cardiac_sr.runtime import start_tensorflow

    start_tensorflow()  # as the stages and the CLI: quiet, oneDNN kernels on (cardiac_sr.runtime)

    from cardiac_sr.models import build_generator
    from cardiac_sr.phantom import PhantomConfig, PhantomGenerator
    from cardiac_sr.inference import load_model, model_scale
    from cardiac_sr.predict import predict_study

    if Path(args.model).is_file():
        model, label = load_model(args.model), args.model
    else:
        model, label = build_generator("TS"), "untrained TS generator (no models/selected.keras)"
    study = PhantomGenerator(PhantomConfig(slices=args.slices, phases=args.phases), seed=0).study(0)
    scale = model_scale(model)
    n = study.n_slices * study.n_phases
    from cardiac_sr.inference import super_resolve

    super_resolve(model, study.image[0, :4] / study.image.max(), scale, progress=False)  # warm-up (tracing)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    predict_study(model, study, scale, progress=False)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model: {label}")
    print(f"study: {study.n_slices} slices x {study.n_phases} phases of {study.shape2d[0]} x {study.shape2d[1]} "
          f"-> x{scale}; {n} images in {seconds:.1f} s = {n / seconds:.2f} slices/s "
          f"({1000 * seconds / n:.0f} ms per slice) on {len(os.sched_getaffinity(0))} cores")
    print(f"peak resident memory: {peak_mb:.0f} MiB (after warm-up: {rss0 / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
