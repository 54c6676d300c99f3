"""Replaying one trace file from several browsers at once.

Gradio stores an upload under a hash of its content, so browsers that upload the same file
share one path: reading it must not delete it under the others (it did: the second got "Not a
trace file: No such file or directory"). Gradio's ``delete_cache`` cleans uploads up instead.
"""
import os
import shutil
import socket
import threading
import uuid
from pathlib import Path

import gradio as gr
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import app  # noqa: E402
from explorer.files import read_trace_upload  # noqa: E402
from slowfast.session import Controls, run_to_end  # noqa: E402

READERS = 8


@pytest.fixture(scope="module")
def trace_file(tiny_model, tmp_path_factory):
    settings = Controls(chat=False, sampler="baseline", gen_length=16, block_length=16, steps=16).settings()
    return run_to_end(tiny_model, "replay me", settings).save(tmp_path_factory.mktemp("trace") / "trace.json")


@pytest.fixture
def uploaded(trace_file):
    """The trace where Gradio puts an upload: its upload folder, a folder named by a hash."""
    folder = Path(gr.utils.get_upload_folder()) / f"test-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    shutil.copy(trace_file, folder / "trace.json")
    yield folder / "trace.json"
    shutil.rmtree(folder, ignore_errors=True)


def at_once(fn, n: int = READERS) -> list:
    """``fn(i)`` in ``n`` threads released together; the results (or exceptions) in order."""
    start, results = threading.Barrier(n), [None] * n

    def work(i):
        start.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_eight_browsers_replay_the_same_upload_at_once(uploaded):
    states = [{} for _ in range(READERS)]
    outputs = at_once(lambda i: app.on_replay(str(uploaded), states[i]))
    messages = [o if isinstance(o, Exception) else o[0] for o in outputs]
    assert all(isinstance(m, str) and m.startswith("Replaying a trace") for m in messages), messages
    assert all(s["trace"].prompt == "replay me" for s in states)  # each browser's own state holds the run
    assert uploaded.is_file()  # still there for the next browser; delete_cache removes it later
    assert app.on_replay(str(uploaded), {})[0].startswith("Replaying a trace")


def test_read_trace_upload_reads_without_deleting(uploaded):
    traces = at_once(lambda i: read_trace_upload(str(uploaded)))
    assert all(getattr(t, "prompt", None) == "replay me" for t in traces), traces
    assert read_trace_upload(Path(uploaded)).prompt == "replay me"

    class GradioFile:  # older Gradio passes an object with the path as ``name``
        name = str(uploaded)

    assert read_trace_upload(GradioFile()).prompt == "replay me" and uploaded.is_file()


def test_a_missing_upload_says_so_without_the_servers_folders(tmp_path):
    with pytest.raises(OSError, match=r"the uploaded file 'gone.json' could not be read \(No such file") as exc:
        read_trace_upload(str(tmp_path / "gone.json"))
    assert str(tmp_path) not in str(exc.value)
    message = app.on_replay(str(tmp_path / "gone.json"), {})[0]
    assert message.startswith("⚠️ Not a trace file: the uploaded file") and "upload it again" in message
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError):
        read_trace_upload(bad)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_eight_clients_upload_the_same_file_to_replay_at_once(tiny_dir, trace_file):
    """Through the served app: each client uploads the same bytes (one path on the server)."""
    gradio_client = pytest.importorskip("gradio_client")
    demo = app.build_app(str(tiny_dir))
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        clients = [gradio_client.Client(url, verbose=False) for _ in range(READERS)]
        outputs = at_once(lambda i: clients[i].predict(trace_file=gradio_client.handle_file(str(trace_file)),
                                                       api_name="/replay"))
        messages = [o if isinstance(o, Exception) else o[0] for o in outputs]
        assert all(isinstance(m, str) and m.startswith("Replaying a trace") for m in messages), messages
    finally:
        demo.close()
