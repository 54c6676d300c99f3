"""Compare's table and message (explorer/compare.py ``summary``): the runs' text as it is (the
table shows cells as text, so escaping would show ``&lt;|endoftext|&gt;``), columns short
enough for a 1366 px screen, and "an arithmetic problem"."""
import pytest

from explorer.compare import COMPARE_HEADERS, COMPARE_WIDTHS, TEXT_CHARS, article, summary
from slowfast.session import Controls, run_to_end

NASTY = "9 <|endoftext|> a < b & c > d [x](http://e) 100% <b>bold</b>"


@pytest.fixture(scope="module")
def run(tiny_model):
    def decode(prompt: str, text: str, label_seconds: float = 0.123456):
        settings = Controls(chat=False, sampler="baseline", gen_length=16, block_length=16, steps=16).settings()
        trace = run_to_end(tiny_model, prompt, settings)
        trace.text = text
        trace.summary = dict(trace.summary, seconds=label_seconds)
        return trace
    return decode


def test_the_table_holds_the_runs_text_and_labels_unescaped(run):
    traces = [run("Hi", NASTY), run("Hi", NASTY + " more")]
    message, table = summary(traces, ["<b>base</b>", "slowfast + cache"])
    assert [row[-1] for row in table] == [NASTY, NASTY + " more"]  # raw: the table escapes for itself
    assert [row[0] for row in table] == ["<b>base</b>", "slowfast + cache"]
    assert not any("&lt;" in str(cell) or "&amp;" in str(cell) or "&#" in str(cell) for row in table for cell in row)
    assert [row[8] for row in table] == ["yes", "no"]


def test_the_columns_are_short_and_their_widths_fill_the_table(run):
    message, table = summary([run("Hi", "x" * 300)], ["baseline"])
    assert len(table[0]) == len(COMPARE_HEADERS) == len(COMPARE_WIDTHS)
    assert sum(float(w.rstrip("%")) for w in COMPARE_WIDTHS) == pytest.approx(100)
    assert max(len(h) for h in COMPARE_HEADERS) <= len("speedup (tokens)")
    assert table[0][6] == 0.12  # seconds, two decimals
    assert table[0][-1] == "x" * 300  # the whole text (the page shows TEXT_CHARS of it; its cell and the API all)
    assert TEXT_CHARS == 80


def test_the_message_names_the_task_with_the_right_article(run):
    arithmetic, _ = summary([run("Q: 7+5-3=? A:", " 7+5=12, 12-3=9. The answer is 9.")], ["baseline"])
    assert "The prompt is an **arithmetic** problem" in arithmetic
    story, _ = summary([run("Story: Mia has two red apples .", " Mia eats one .")], ["baseline"])
    assert "The prompt is a **story** problem" in story
    assert [article(w) for w in ("arithmetic", "copy", "story", "equation", "")] == ["an", "a", "a", "an", "a"]
