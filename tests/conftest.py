import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SUNNYBROOK = ROOT.parent / "shared" / "data" / "sunnybrook"


@pytest.fixture(scope="session")
def sunnybrook() -> Path:
    assert SUNNYBROOK.is_dir(), f"real test data missing: {SUNNYBROOK} (the project's ../shared)"
    return SUNNYBROOK


@pytest.fixture(scope="session")
def sunnybrook_studies(sunnybrook):
    from cardiac_sr.readers import read_dicom

    return {s.patient_id: s for s in read_dicom(sunnybrook)}


@pytest.fixture(scope="session")
def small_phantom():
    from cardiac_sr.phantom import PhantomConfig, PhantomGenerator

    cfg = PhantomConfig(slices=3, phases=6)
    return PhantomGenerator(cfg, seed=11).study(0, labels=True)
