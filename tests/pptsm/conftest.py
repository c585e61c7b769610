import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """PP-TSM's unit tests run tiny models: one thread is as fast on a quiet machine and many
    times faster on a busy one (2 cores shared by several jobs); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
