import pytest

import jobs  # noqa: F401  (sets the OpenMP wait policy before torch loads, as every entry point does)
from tests.beam_services import portable_runner  # noqa: F401  (fixture: Beam's job service + worker pool)
from tests.s3server import s3  # noqa: F401  (fixture: a moto S3 server, buckets raw and shop)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped, with the reason, where there is none."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
