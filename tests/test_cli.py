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
    """README: `import cardiac_sr.models` registers the custom layers; plain Keras loads the file."""
    import cardiac_sr.models  # noqa: F401
    from cardiac_sr.models import build_generator

    build_generator("TS", filters=8, res_blocks=1).save(tmp_path / "m.keras")
    model = keras.saving.load_model(tmp_path / "m.keras")
    assert model.predict_on_batch(np.zeros((1, 8, 8, 1), np.float32)).shape == (1, 32, 32, 1)
