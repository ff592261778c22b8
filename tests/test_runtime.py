"""TensorFlow starts quietly and says once which device runs the work."""

import os
import subprocess
import sys

from cardiac_sr.runtime import is_noise


def test_start_up_notices_are_recognised_and_real_errors_are_not():
    assert is_noise("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert is_noise("I0000 00:00:1796101896.655341   16086 cudart_stub.cc:31] Could not find cuda drivers")
    assert is_noise("E0000 00:00:1796101902.510048   16086 cuda_platform.cc:52] failed call to cuInit: INTERNAL")
    assert is_noise("To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild")
    assert not is_noise("E0000 00:00:17961.5 16086 op_kernel.cc:1] OOM when allocating tensor")
    assert not is_noise("Traceback (most recent call last):")


def test_a_cpu_command_prints_one_device_line_and_no_start_up_noise():
    script = ("import logging; logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
              "from cardiac_sr.runtime import start_tensorflow\n"
              "start_tensorflow(); start_tensorflow()\n"
              "import tensorflow as tf; print(float(tf.reduce_sum(tf.ones(3))))\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CI machines have no GPU; make it so here too
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3.0"
    assert proc.stderr.strip().splitlines() == ["no GPU found, running on the CPU"], proc.stderr


def test_when_tensorflow_fails_to_import_everything_it_printed_is_shown(tmp_path):
    """A broken install prints C++ lines before the ImportError; they must not vanish with the start-up noise."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\n"
        "os.write(2, b'E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL\\n')\n"
        "os.write(2, b'libtensorflow_framework.so.2: cannot open shared object file\\n')\n"
        "raise ImportError('broken tensorflow')\n")
    script = "from cardiac_sr.runtime import start_tensorflow\nstart_tensorflow()\n"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path)] + [p for p in sys.path if p])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "cannot open shared object file" in proc.stderr   # the line that says why
    assert "failed call to cuInit" in proc.stderr            # noise too: on failure nothing is filtered
    assert "ImportError: broken tensorflow" in proc.stderr


def _onednn_on(env_value):
    """Whether TensorFlow's oneDNN kernels are on after start_tensorflow (TF_ENABLE_ONEDNN_OPTS as given)."""
    script = ("from cardiac_sr.runtime import start_tensorflow\nstart_tensorflow()\n"
              "from tensorflow.python.util import _pywrap_util_port\nprint(_pywrap_util_port.IsMklEnabled())\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    if env_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = env_value
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1] == "True"


def test_onednn_kernels_are_on_for_every_cpu_unless_the_user_turns_them_off():
    """TensorFlow turns oneDNN on by default only on CPUs with AVX512_VNNI/BF16 or AMX; AVX2-only CPUs then
    train 2.4x more slowly on Eigen kernels. start_tensorflow turns it on everywhere; a user's 0 stays 0."""
    assert _onednn_on(None)
    assert not _onednn_on("0")
