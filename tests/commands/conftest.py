import pytest
import torch


@pytest.fixture
def restore_threads():
    """For commands run in-process with --threads: give the rest of the session its thread count back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
