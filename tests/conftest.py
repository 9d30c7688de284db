import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run tiny models on 2 shared cores: one intra-op thread is several times faster (no contention)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
