"""Benchmark: `dvc repro prepare degrade` with the default params, from scratch, timed.

Target (issue 3): at most 2 minutes on a 2-core machine.  Runs in a temporary
copy of the repository (code, params, dvc.yaml; no data, no cache) so the
working tree and its DVC cache are untouched.

    python benchmarks/prepare_degrade.py
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEEP = ["dvc.yaml", "params.yaml", "pyproject.toml", "stages", "src", ".dvc/config", ".dvc/.gitignore", ".dvcignore"]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cardiac-sr-bench-") as tmp:
        tmp = Path(tmp)
        for item in KEEP:
            src = ROOT / item
            if src.is_dir():
                shutil.copytree(src, tmp / item, ignore=shutil.ignore_patterns("__pycache__"))
            elif src.exists():
                (tmp / item).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, tmp / item)
        subprocess.run(["git", "init", "-q"], cwd=tmp, check=True)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(tmp / "src")}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "prepare", "degrade"], cwd=tmp, env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
            return proc.returncode
    cores = len(os.sched_getaffinity(0))
    print(f"dvc repro prepare degrade (default params, from scratch): {seconds:.1f} s on {cores} cores "
          f"(target <= 120 s): {'OK' if seconds <= 120 else 'TOO SLOW'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
