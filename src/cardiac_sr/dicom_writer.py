"""The DICOM writer: one file per (slice, phase) of a super-resolved study, written as its image comes.

The header the reader kept, with the pixels, size, spacing and position updated, new UIDs, and what
traces each image to its input.  Opened through :func:`cardiac_sr.writers.open_writer`.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np

from .errors import CardiacSRError
from .study import Study

SERIES_FILE = re.compile(r"s\d{3}_t\d{3}\.dcm")  # the names series_file gives


def series_file(s: int, t: int) -> str:
    """File name of slice ``s``, phase ``t`` in a DICOM series written by :class:`DicomWriter`."""
    return f"s{s:03d}_t{t:03d}.dcm"


# the series written per input series: their SeriesNumber is the input's plus this offset
SERIES_NUMBER_OFFSETS = {"super-resolved": 1000, "SR uncertainty": 2000, "SR uncertainty warning": 3000}
IMPLEMENTATION_UID = "2.25.315318440297414187917617427542446370416"  # cardiac-sr's (a UUID-derived UID, PS3.5 B.2)


class DicomWriter:
    """One DICOM file per (slice, phase), written as its image comes: the header the reader kept, with
    pixels, size, spacing and position updated, new UIDs, and what traces it to its input."""

    def __init__(self, study: Study, folder: Path, scale: int, model_name: str, description: str = "super-resolved",
                 window: tuple[float, float] | None = None):
        import datetime

        from pydicom.uid import generate_uid

        self.headers = study.meta.get("dicom_headers")
        if self.headers is None:
            raise CardiacSRError("DICOM output needs a DICOM input (its tags are copied); write .nii.gz instead")
        self.folder, self.scale, self.model_name, self.description = folder, scale, model_name, description
        self.window = window  # (centre, width) in intensity units; None: the input's
        self.series_uid = generate_uid()
        self.now = datetime.datetime.now()
        self.number_offset = SERIES_NUMBER_OFFSETS.get(description, 1000)
        self.images_written = 0

    def write(self, start: int, images: np.ndarray) -> None:
        """Images ``start, start + 1, ...`` in (slice, phase) order, (k, H, W) in intensity units."""
        t_count = self.headers.shape[1]
        self.images_written += len(images)
        for k, image in enumerate(images):
            s, t = divmod(start + k, t_count)
            self._write_one(s, t, image)

    def _write_one(self, s: int, t: int, image: np.ndarray) -> None:
        from pydicom.dataset import Dataset
        from pydicom.uid import ExplicitVRLittleEndian

        from . import __version__

        ds = copy.deepcopy(self.headers[s, t])  # the header the reader kept: the source is never re-read
        scale, description = self.scale, self.description
        source = Dataset()
        meta = getattr(ds, "file_meta", None)
        source.ReferencedSOPClassUID = ds.get("SOPClassUID") or getattr(meta, "MediaStorageSOPClassUID", "")
        source.ReferencedSOPInstanceUID = ds.get("SOPInstanceUID") or getattr(meta, "MediaStorageSOPInstanceUID", "")
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        stored = (image - intercept) / slope
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
        bits = int(getattr(ds, "BitsAllocated", 16))
        dtype = np.dtype(f"{'i' if signed else 'u'}{max(bits, 16) // 8}")
        bits_stored = int(getattr(ds, "BitsStored", bits))
        lo, hi = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, (1 << bits_stored) - 1)
        pixels = np.clip(np.rint(stored), lo, hi).astype(dtype)
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            iop = np.asarray(ds.ImageOrientationPatient, float)
            shift = -(1.0 - 1.0 / scale) / 2.0
            ipp = np.asarray(ds.ImagePositionPatient, float) + shift * (iop[:3] * col_mm + iop[3:] * row_mm)
            ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.PixelSpacing = [f"{row_mm / scale:.6f}", f"{col_mm / scale:.6f}"]
        for tag in ("SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue"):
            if tag in ds:
                del ds[tag]
        # Rows, Columns, Bits*, Pixel Representation, Samples per Pixel, a new SOP Instance UID
        ds.set_pixel_data(pixels, photometric_interpretation="MONOCHROME2", bits_stored=bits_stored)
        ds.SeriesInstanceUID = self.series_uid
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        flavour = list(getattr(ds, "ImageType", []) or [])[2:] or ["OTHER"]  # value 3 is required for MR
        ds.ImageType = ["DERIVED", "SECONDARY", *flavour]
        old = str(getattr(ds, "SeriesDescription", "") or "").strip()
        ds.SeriesDescription = (f"{old} {description} x{scale} (cardiac-sr {self.model_name})").strip()[:64]
        ds.SeriesNumber = int(getattr(ds, "SeriesNumber", 0) or 0) + self.number_offset
        ds.DerivationDescription = f"{description} x{scale} in-plane by cardiac-sr model {self.model_name}"[:1024]
        ds.SourceImageSequence = [source]  # the input image this one was derived from
        ds.ContentDate, ds.ContentTime = self.now.strftime("%Y%m%d"), self.now.strftime("%H%M%S")
        ds.SoftwareVersions = f"cardiac-sr {__version__}"
        ds.file_meta.ImplementationClassUID = IMPLEMENTATION_UID
        ds.file_meta.ImplementationVersionName = f"CARDIACSR_{__version__.replace('.', '')}"[:16]
        if self.window is not None:
            ds.WindowCenter, ds.WindowWidth = f"{self.window[0]:.6g}", f"{self.window[1]:.6g}"
        ds.save_as(self.folder / series_file(s, t), enforce_file_format=True)
