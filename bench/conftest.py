"""Fixtures for the benchmarks in this folder: networks exported once per session."""
import pytest
import torch

import peers
from cpu_engine import network


@pytest.fixture(scope="session")
def lenet_network(tmp_path_factory):
    net, _ = network("lenet")
    return peers.Network(net, (1, 28, 28), str(tmp_path_factory.mktemp("bench")))
