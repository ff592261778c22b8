"""TensorFlow start-up: quiet by default, and one line saying which device runs the work.

TensorFlow's C++ side prints about eight lines on every start on a machine
without CUDA ("Could not find cuda drivers", "failed call to cuInit", oneDNN
and CPU-feature notices).  ``TF_CPP_MIN_LOG_LEVEL`` hides only the ones
logged after absl's logging is initialised (tensorflow/tensorflow#100442), so
:func:`start_tensorflow` imports TensorFlow and lists the GPUs with the
process's stderr (file descriptor 2) sent to a temporary file, then prints
back every line that is not such a start-up notice (all of them when the
import itself fails).  A user who sets
``TF_CPP_MIN_LOG_LEVEL`` gets TensorFlow's own behaviour, untouched.

It also turns TensorFlow's oneDNN kernels on for every x86 CPU.  On Linux
TensorFlow enables them by default only where the CPU has AVX512_VNNI,
AVX512_BF16, AVX_VNNI or AMX (``DefaultOneDnnPolicy`` in
tensorflow/core/util/port.cc); elsewhere, on an AVX2-only CPU for instance, it
falls back to Eigen kernels that train our generators about 2.4x more slowly
(mse-NN: 3.8 against 9.2 patches/s on one core of an AVX2 AMD EPYC).  On
CPUs with those features nothing changes, bits included: oneDNN was on
already.  ``TF_ENABLE_ONEDNN_OPTS=0`` set by the user is respected.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile

log = logging.getLogger(__name__)

# Start-up notices, not problems: absl's pre-init banner, C++ INFO/WARNING lines (I0000/W0000 ...),
# the CPU-feature advice, and the failed CUDA probe on a machine without a GPU.
_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog|[IW]\d{4} |To enable the following "
                    r"instructions|E\d{4} .*(cuInit|cuda_platform|cuFFT|cuDNN|cuBLAS)|\d{4}-\d\d-\d\d [\d:.]+: [IW] )")

_started = False


def is_noise(line: str) -> bool:
    """True for a TensorFlow start-up notice that :func:`start_tensorflow` hides."""
    return bool(_NOISE.match(line))


@contextlib.contextmanager
def _stderr_to(file):
    """Send file descriptor 2 (C++ and Python stderr alike) to ``file`` for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def start_tensorflow() -> list:
    """Import TensorFlow quietly (once per process); log the device; return the physical GPUs."""
    global _started
    user_choice = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING after start-up
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on every x86 CPU (see above)
    if user_choice or _started:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    else:
        with tempfile.TemporaryFile(mode="w+") as captured:
            try:
                with _stderr_to(captured):
                    import tensorflow as tf

                    gpus = tf.config.list_physical_devices("GPU")
            except BaseException:  # TensorFlow did not start: everything it printed may say why
                captured.seek(0)
                sys.stderr.write(captured.read())
                raise
            captured.seek(0)
            kept = [line for line in captured.read().splitlines() if line.strip() and not is_noise(line)]
        for line in kept:
            print(line, file=sys.stderr)
    if not _started:
        if gpus:
            log.info("%d GPU(s) found: %s", len(gpus), ", ".join(g.name for g in gpus))
        else:
            log.info("no GPU found, running on the CPU")
    _started = True
    return gpus
