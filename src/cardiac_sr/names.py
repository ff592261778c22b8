"""The project's names, in one place: models, losses, up-samplings, baselines, splits, sources, paths.

Every module that needs one of these imports it from here, so no library
module imports a stage module (``prepare``, ``degrade``, ``train``,
``evaluate``, ``report``, ``predict``) for a constant.
"""

from __future__ import annotations

from pathlib import Path

from .errors import CardiacSRError

LOSSES = ("perceptual", "mse")
UPSAMPLINGS = ("TS", "NN")  # transposed convolution | nearest neighbour + convolution
MODEL_NAMES = tuple(f"{loss}-{up}" for loss in LOSSES for up in UPSAMPLINGS)  # perceptual-TS ... mse-NN
SEED_NAMES = {"perceptual-TS": "Model 1", "perceptual-NN": "Model 2", "mse-TS": "Model 3", "mse-NN": "Model 4"}
BASELINES = ("bicubic", "nearest", "zerofill")

SPLITS = ("train", "val", "test")
EXTERNAL = "external"  # the optional external test set (evaluate.external, data/external)
SOURCES = ("phantom", "dicom", "nifti")
DEGRADATIONS = ("blur_bicubic", "kspace")
WINDOWS = ("none", "hann", "tukey")  # k-space apodisation (degrade.window)
OPTIMIZERS = ("adam",)
SCHEDULES = ("constant", "cosine")  # train.schedule: the learning rate over the run
DEFAULT_PERCENTILE = 99.5  # intensity percentile -> 1 (params.yaml prepare.percentile; assumed for a card-less model)
DEFAULT_DEGRADATION = {"method": "blur_bicubic", "blur_sigma": 1.0}  # the seed's, assumed for a card-less model
STRATEGIES = ("auto", "default", "mirrored", "multiworker")  # train.strategy (auto: MirroredStrategy when > 1 GPU)
UP_INITS = ("bilinear", "glorot_uniform")  # train.up_init: the TS kernels' start

# default paths of the pipeline's outputs (dvc.yaml passes them on the command line)
PREPARED_DIR = "data/prepared"
DEGRADED_DIR = "data/degraded"
EXTERNAL_DIR = "data/external"
MODELS_DIR = "models"
METRICS_DIR = "metrics"
PLOTS_DIR = "metrics/plots"
LIVE_DIR = "dvclive"         # dvclive/<model>/: training logs
CHECKPOINT_DIR = "scratch/train"  # scratch/train/<model>/: the resume checkpoint (not a DVC output)
DEFAULT_MODEL = "models/selected.keras"  # the pipeline's selection (params loss, upsampling)
PREDICT_MODEL = "models/mse-NN.keras"    # cardiac-sr predict/assess/export: the most gain on real scans


def timings_file(metrics_file: str | Path) -> Path:
    """Where a stage keeps the timings of a metrics file (``metrics/train/mse-NN.json`` ->
    ``metrics/train/mse-NN.timings.json``): a plain output, not a DVC metric, so that ``dvc metrics diff``
    and ``dvc exp show`` compare quality, not how busy the machine was."""
    path = Path(metrics_file)
    return path.with_name(f"{path.stem}.timings.json")


def split_model_name(name: str) -> tuple[str, str]:
    """``'mse-TS'`` -> ``('mse', 'TS')``, with a clear error for anything else."""
    if name not in MODEL_NAMES:
        raise CardiacSRError(f"train: unknown value {name!r} for 'model name'; valid values: {', '.join(MODEL_NAMES)}")
    loss, upsampling = name.split("-")
    return loss, upsampling
