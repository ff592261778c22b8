"""cardiac-sr: x4 super-resolution of short-axis cine bSSFP MR slices.

Modules:
    errors      the one exception type users see (names the file and the problem)
    fileio      atomic writes: nothing half-written survives an interruption
    params      params.yaml loading with clear errors for missing keys
    phantom     the embedded default dataset: a synthetic cine bSSFP phantom
    readers     DICOM and NIfTI cine studies (+ Sunnybrook contours)
    prepare     studies -> normalised float32 slice dataset split by patient
    degrade     HR slices -> LR inputs (+ the bicubic baseline)
    cli         the ``cardiac-sr`` command line
"""

__version__ = "0.1.0"
