"""Command-line conventions: --version, python -m, --quiet, --json, a closed pipe."""

import json
import subprocess
import sys

import keras
import numpy as np

from cardiac_sr.cli import main


def test_version_and_python_m(capsys):
    from cardiac_sr import __version__

    out = subprocess.run([sys.executable, "-m", "cardiac_sr", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"cardiac-sr {__version__}"


def test_predict_json_and_quiet(tmp_path, capsys):
    inp = keras.Input((None, None, 1))
    keras.Model(inp, keras.layers.UpSampling2D(4)(inp)).save(tmp_path / "up.keras")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((2, 16, 16)).astype(np.float32))
    assert main(["-q", "predict", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"), "--model",
                 str(tmp_path / "up.keras"), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["written"] == [str(tmp_path / "y.npy")] and report["model"] == str(tmp_path / "up.keras")
    assert report["seconds"] >= 0 and "INFO" not in captured.err and "%|" not in captured.err


def test_compare_json(tmp_path, capsys):
    from pathlib import Path

    metrics = Path(__file__).resolve().parents[1] / "metrics"
    assert main(["compare", "bicubic", "mse-NN", "--metrics", str(metrics), "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert set(both) == {"bicubic", "mse-NN"} and both["mse-NN"]["psnr"]["mean"] > both["bicubic"]["psnr"]["mean"]


def test_a_closed_pipe_is_not_a_traceback():
    """`cardiac-sr compare ... --json | head`: the reader is gone before the output is written."""
    code = "import sys; from cardiac_sr.cli import main; sys.exit(main(['compare', 'bicubic', 'mse-NN', '--json']))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # closed before the child writes: its first write fails with EPIPE
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and b"Traceback" not in err and b"BrokenPipe" not in err, err


def test_keras_loads_a_model_after_importing_the_package(tmp_path):
    """README: after `import cardiac_sr` (before or after keras), plain `keras.saving.load_model` reads our
    .keras files, and `import cardiac_sr` alone does not load TensorFlow."""
    from cardiac_sr.models import build_generator

    build_generator("NN", filters=8, res_blocks=1).save(tmp_path / "m.keras")
    for order in ("import cardiac_sr, keras", "import keras, cardiac_sr"):
        code = (f"{order}\nimport numpy as np\nm = keras.saving.load_model({str(tmp_path / 'm.keras')!r})\n"
                "print(m.predict_on_batch(np.zeros((1, 8, 8, 1), np.float32)).shape)")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and proc.stdout.strip().endswith("(1, 32, 32, 1)"), (order, proc.stderr[-2000:])
    proc = subprocess.run([sys.executable, "-c", "import sys, cardiac_sr; print('tensorflow' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr
    # without the package the file does not load: the test above is not vacuous
    proc = subprocess.run([sys.executable, "-c", f"import keras; keras.saving.load_model({str(tmp_path / 'm.keras')!r})"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "CubicUpsample" in proc.stderr
