import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTNING_NAS_SHARED", REPO.parent / "shared"))
NB201_CSV = SHARED / "data" / "nb201" / "nats_bench_tss.csv"


@pytest.fixture(scope="session")
def nb201_records():
    from lightning_nas.space.nb201 import read_nb201_csv

    if not NB201_CSV.is_file():
        message = f"NAS-Bench-201 ground truth not found at {NB201_CSV} (set LIGHTNING_NAS_SHARED)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always has shared/ beside the clone: a missing table is a failure there
        pytest.skip(message)
    return read_nb201_csv(NB201_CSV)
