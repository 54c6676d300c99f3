import pytest
import torch

# The test models are tiny: one thread is fastest, and it keeps the suite quick when
# something else (a training run, a second test process) shares the two cores.
torch.set_num_threads(1)

from slowfast.models import load_model
from slowfast.models.tiny import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A random-weight checkpoint in the official LLaDA layout (sharded, with index)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-llada"))


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    return load_model(str(tiny_dir), device="cpu")
