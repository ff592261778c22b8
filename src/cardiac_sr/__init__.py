"""cardiac-sr: x4 super-resolution of short-axis cine bSSFP MR slices.

Modules:
    errors      the one exception type users see (names the file and the problem)
    fileio      atomic writes: nothing half-written survives an interruption
    params      params.yaml loading with clear errors for missing keys
    phantom     the embedded default dataset: a synthetic cine bSSFP phantom
    readers     any input -> studies: picks dicom (DICOM series + Sunnybrook contours) or nifti
                (NIfTI volumes, ACDC/M&Ms layouts and labels); inputs: paths and format sniffing
    writers     super-resolved volumes as NIfTI, DICOM or .npy, streamed image by image
    prepare     studies -> normalised float32 slice dataset split by patient
    degrade     HR slices -> LR inputs (+ the bicubic baseline)
    inference   the one way a model runs over images (batches, tiles, self-ensemble)
    predict     ``cardiac-sr predict``: a user's scan, predicted and written a chunk at a time
    cli         the ``cardiac-sr`` command line

``import cardiac_sr`` is enough for plain ``keras.saving.load_model`` to read our
``.keras`` files: the generator's custom layer (:class:`cardiac_sr.models.CubicUpsample`)
is registered as soon as Keras is imported (now, if it already is), without making
``import cardiac_sr`` itself load TensorFlow (the CLI and the data stages never need it).
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"


class _RegisterLayersAfterKeras(importlib.abc.MetaPathFinder):
    """An import hook (as wrapt's post-import hooks): when ``keras`` is first imported, import
    :mod:`cardiac_sr.models` right after it, which registers our layers with Keras; then step aside."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)  # once only; the finders after us find keras as usual
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            importlib.import_module("cardiac_sr.models")

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    importlib.import_module("cardiac_sr.models")
elif not any(isinstance(f, _RegisterLayersAfterKeras) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterLayersAfterKeras())
