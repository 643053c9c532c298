"""pytest setup for the Python package's tests: the package comes from PYTHONPATH (the build tree's
build/python under make test) or from an installed wheel; tests run in float64 on the CPU unless
they say otherwise."""
import os

import pytest
import torch

torch.set_num_threads(1)  # make test runs these next to ctest's tests on 2 cores


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)


def repository_root():
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
