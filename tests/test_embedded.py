"""The shipped embedded model reaches the bar on the held-out split, through the same public
loader and engine a user calls: baseline sampler, one token per step."""
import pytest

from slowfast.engine import GenerationSettings, generate
from slowfast.models import load_model
from slowfast.tasks import TASKS

BAR = {"arithmetic": 0.90, "copy": 0.95}
N = 100


@pytest.fixture(scope="module")
def embedded():
    return load_model("embedded", device="cpu")


@pytest.mark.parametrize("task_name", list(BAR))
def test_embedded_model_reaches_the_bar_with_the_baseline(embedded, task_name):
    task = TASKS[task_name]
    settings = GenerationSettings(sampler="baseline", gen_length=task.gen_length, block_length=task.gen_length,
                                  steps=task.gen_length)
    examples = task.examples("heldout", N)
    hits = [task.score(ex, generate(embedded, ex.prompt, settings).text)[task.primary_metric] for ex in examples]
    assert sum(hits) / N >= BAR[task_name]
