import os

import pytest
import torch

# The test models are tiny: one thread is fastest, and it keeps the suite quick when
# something else (a training run, a second test process) shares the two cores.
torch.set_num_threads(1)

from slowfast.models import load_model
from slowfast.models.tiny import write_tiny_checkpoint

FULL_EVAL_ENV = "SLOWFAST_FULL_EVAL"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"full_eval: the embedded model's full evaluation (100 held-out problems per task, minutes); "
                   f"skipped unless {FULL_EVAL_ENV}=1")


def pytest_collection_modifyitems(config, items):
    """The full evaluation runs only when asked for: SLOWFAST_FULL_EVAL=1 python -m pytest -q tests/test_embedded.py"""
    if os.environ.get(FULL_EVAL_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"the full evaluation: set {FULL_EVAL_ENV}=1 to run it")
    for item in items:
        if "full_eval" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A random-weight checkpoint in the official LLaDA layout (sharded, with index)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-llada"))


@pytest.fixture(scope="session")
def plain_dir(tmp_path_factory):
    """The embedded model without its chat template (``tokenizer_config.json`` lacks
    ``chat_template``): a base model, which the app refuses to chat with."""
    import json
    import shutil

    from slowfast.models.loading import EMBEDDED_DIR

    folder = tmp_path_factory.mktemp("plain") / "plain-embedded"
    shutil.copytree(EMBEDDED_DIR, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config.pop("chat_template", None), "the embedded model ships a chat template"
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    return load_model(str(tiny_dir), device="cpu")
