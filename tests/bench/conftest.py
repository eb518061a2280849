import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Measurement tests run single-threaded: on a CPU shared with other jobs, two threads make
    multi-token forwards wait for each other and run 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
