"""A load test of the running app through its public API (gradio_client), loopback only.

Eight clients at once do runs, compares, replays and stops, and some disconnect or cancel
mid-run or mid-compare; the same load runs ROUNDS times. Checked: every request completes (or
waits in the queue), each client gets the text of its own prompt, no two decodings overlap,
abandoned runs stop, a stopped or cancelled compare starts no further configuration, and
memory at idle stays within RSS_GROWTH_MIB of its level after the first round (the warm-up:
every path has run once). With SLOWFAST_LOAD_REPORT=FILE the figures (requests, failures,
latency percentiles, memory per round) are written there as JSON; the README's come from that.
"""
import json
import os
import socket
import statistics
import threading
import time
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gradio_client = pytest.importorskip("gradio_client")

import app  # noqa: E402
from slowfast.session import DECODES, Controls, run_to_end  # noqa: E402

CLIENTS = 8
ROUNDS = 3  # the first is the warm-up; memory is measured against the level after it
RSS_GROWTH_MIB = 40  # at idle after the rounds, over the level after the warm-up (measured: +6 to +16)
ENDINGS = ("stop", "cancel", "disconnect", "compare-stop", "compare-cancel")  # how each client's long event ends
SHORT = dict(sampler="baseline", gen_length=32, block_length=32, steps=32)
LONG = dict(sampler="baseline", gen_length=448, block_length=16, steps=448)
LONG_FORWARD_SECONDS = 0.02  # a long run's forward takes this long, as a real model's would


def slow_long_forwards(model, monkeypatch) -> None:
    """Make the long runs' forwards take LONG_FORWARD_SECONDS each. The tiny model decodes
    448 tokens in about 2 s, less than a Stop or cancel can take to arrive on a loaded
    2-core machine, so without this a run could end on its own before the test's Stop
    and look "not stopped"; with it a long run needs 9 s or more to finish by itself."""
    forward = model.net.forward

    def slowed(tokens, *args, **kwargs):
        if tokens.shape[-1] >= LONG["gen_length"]:
            time.sleep(LONG_FORWARD_SECONDS)
        return forward(tokens, *args, **kwargs)

    monkeypatch.setattr(model.net, "forward", slowed)  # undone when the test ends


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def api_args(model: str, prompt: str, **changes) -> dict:
    c = Controls(**{**dict(chat=False), **changes})
    return {"model": model, "prompt": prompt, **{n: getattr(c, n) for n in app.CONTROL_NAMES}}


@pytest.fixture(scope="module")
def server(tiny_dir):
    demo = app.build_app(str(tiny_dir))
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    demo.url = f"http://127.0.0.1:{port}/"
    yield demo
    demo.close()


def run_then_disconnect(demo, args: dict) -> object:
    """Start a run over the browser's own protocol, wait until it streams, then drop the
    connection the way a closed tab does; returns the abandoned BackgroundRun."""
    import httpx

    session = uuid.uuid4().hex[:12]
    fn_index = next(i for i, fn in demo.fns.items() if fn.api_name == "run")
    with httpx.Client(base_url=demo.url, timeout=60) as http:
        http.post("gradio_api/queue/join", json={"data": list(args.values()), "fn_index": fn_index,
                                                 "session_hash": session, "trigger_id": None}).raise_for_status()
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if "process_generating" in line:  # the first frame: it decodes
                    break
            run = wait_for_run(session, None)
    return run  # the connection is closed here


def session_run(session_hash: str):
    return app.SESSIONS._states.get(session_hash, ({}, 0))[0].get("run")


def wait_for_run(session_hash: str, previous, timeout: float = 30):
    """The BackgroundRun this client's session started after ``previous``, once it decodes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = session_run(session_hash)
        if job is not None and job is not previous and job.steps_done > 0:
            return job
        time.sleep(0.02)
    raise AssertionError("the run never started")


def wait_for_compare(session_hash: str, previous, timeout: float = 120):
    """The first run of this client's compare (after ``previous``), once it decodes."""
    return wait_for_run(session_hash, previous, timeout)


def idle_rss(disconnects: int) -> float:
    """RSS once the browsers that left are released (the raw disconnects never say so: theirs
    wait for the session TTL, holding a stopped run only)."""
    end = time.monotonic() + 20
    while len(app.SESSIONS) > disconnects and time.monotonic() < end:
        time.sleep(0.2)
    time.sleep(0.5)
    app.release_memory()
    return rss_mib()


def test_many_clients_at_once(server, tiny_dir, tiny_model, tmp_path, monkeypatch):
    model, url = str(tiny_dir), server.url
    prompts = [f"Client {i} says hello" for i in range(CLIENTS)]
    expected = {p: run_to_end(tiny_model, p, Controls(chat=False, **SHORT).settings()).text for p in prompts}
    trace_file = run_to_end(tiny_model, "replay me", Controls(chat=False, **SHORT).settings()).save(tmp_path / "t.json")

    for key in list(app.SESSIONS._states):  # sessions left by earlier tests in this process
        app.SESSIONS.drop(key)
    warm = gradio_client.Client(url, verbose=False)
    warm.predict(**api_args(model, prompts[0], **SHORT), api_name="/run")
    warm.close()
    slow_long_forwards(app.POOL.models[model], monkeypatch)
    time.sleep(1.0)
    app.release_memory()
    rss_first_run = rss_mib()
    DECODES.intervals.clear()
    DECODES.max_active = 0

    latencies: dict[str, list[float]] = {}
    failures: list[str] = []
    orphans: list[tuple[str, int, int]] = []
    lock = threading.Lock()

    def timed(kind: str, fn):
        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - every failure is reported by the test
            with lock:
                failures.append(f"{kind}: {type(exc).__name__}: {exc}")
        finally:
            with lock:
                latencies.setdefault(kind, []).append(time.perf_counter() - t0)

    def cancel(job) -> None:
        end = time.monotonic() + 30  # the client learns its event id from the stream
        while getattr(job.communicator, "event_id", None) is None and time.monotonic() < end:
            time.sleep(0.02)
        job.cancel()

    def long_compare(client, prompt: str, how: str):
        """A long compare ended by Stop or cancel during its first configuration: the run under
        way stops and no further configuration starts (none decodes after it)."""
        previous = session_run(client.session_hash)
        job = client.submit(**{**api_args(model, prompt, **LONG), "configs": ["baseline", "threshold"]},
                            api_name="/compare")
        run = timed("start", lambda: wait_for_compare(client.session_hash, previous))
        if run is None:
            return None
        if how == "compare-stop":
            timed("stop", lambda: client.predict(api_name="/stop"))
            out = timed("compare", lambda: job.result(timeout=120))
            if out is not None and not str(out[0]).startswith("Stopped: 1 of 2 configurations had run"):
                with lock:
                    failures.append(f"a stopped compare: {out[0]}")
        else:
            cancel(job)
        run.wait(10)
        time.sleep(0.5)  # a configuration that started would be decoding by now
        if session_run(client.session_hash) is not run:
            with lock:
                failures.append(f"{how}: a configuration started after the compare was {how.split('-')[1]}ped")
        return run

    def client_work(i: int, how: str) -> None:
        prompt = prompts[i]
        client = gradio_client.Client(url, verbose=False)
        for _ in range(2):
            out = timed("run", lambda: client.predict(**api_args(model, prompt, **SHORT), api_name="/run"))
            if out is not None and out[1] != expected[prompt]:
                with lock:
                    failures.append(f"client {i} got another text: {out[1]!r}")
        out = timed("compare", lambda: client.predict(
            model=model, prompt=prompt, configs=["baseline", "slowfast", "threshold"],
            **{k: v for k, v in api_args(model, prompt, **SHORT).items() if k not in ("model", "prompt")},
            api_name="/compare"))
        if out is not None and not str(out[0]).startswith("Compared 3 runs"):
            with lock:
                failures.append(f"client {i} compare: {out[0]}")
        out = timed("replay", lambda: client.predict(trace_file=gradio_client.handle_file(str(trace_file)),
                                                     api_name="/replay"))
        if out is not None and not str(out[0]).startswith("Replaying"):
            with lock:
                failures.append(f"client {i} replay: {out[0]}")
        # a long run or compare, ended by Stop, by cancel, or by the client going away
        if how.startswith("compare"):
            run = long_compare(client, prompt, how)
        elif how == "disconnect":
            run = timed("start", lambda: run_then_disconnect(server, api_args(model, prompt, **LONG)))
        else:
            previous = session_run(client.session_hash)
            job = client.submit(**api_args(model, prompt, **LONG), api_name="/run")
            run = timed("start", lambda: wait_for_run(client.session_hash, previous, timeout=120))
            if run is not None and how == "stop":
                timed("stop", lambda: client.predict(api_name="/stop"))
            elif run is not None:
                cancel(job)
        if run is not None:
            ended = run.wait(10)
            with lock:
                orphans.append((how, len(run.trace().records), int(ended and run.trace().summary["stopped"])))
        client.close()

    rss_rounds, disconnects, seconds = [], 0, 0.0
    for r in range(ROUNDS):
        endings = [ENDINGS[(i + r) % len(ENDINGS)] for i in range(CLIENTS)]  # every ending, from every client
        threads = [threading.Thread(target=client_work, args=(i, how)) for i, how in enumerate(endings)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        seconds += time.perf_counter() - t0
        assert not any(t.is_alive() for t in threads), "a client hung"
        disconnects += endings.count("disconnect")
        rss_rounds.append(idle_rss(disconnects))
    intervals = sorted(DECODES.intervals)
    overlaps = sum(1 for a, b in zip(intervals, intervals[1:]) if b[0] < a[1])
    all_latencies = [x for v in latencies.values() for x in v]
    growth = rss_rounds[-1] - rss_rounds[0]
    report = {
        "clients": CLIENTS, "rounds": ROUNDS, "requests": len(all_latencies), "failures": len(failures),
        "seconds": round(seconds, 1), "decodes": len(intervals), "overlapping_decodes": overlaps,
        "max_concurrent_decodes": DECODES.max_active,
        "latency_s": {k: {"n": len(v), "p50": round(statistics.median(v), 3),
                          "p95": round(sorted(v)[max(0, int(0.95 * len(v)) - 1)], 3)} for k, v in latencies.items()},
        "abandoned_runs": [{"ended_by": h, "records": n, "stopped": bool(s)} for h, n, s in orphans],
        "rss_mib_after_first_run": round(rss_first_run, 1),
        "rss_mib_at_idle_after_each_round": [round(x, 1) for x in rss_rounds],
        "rss_mib_growth_after_warm_up": round(growth, 1), "rss_mib_bound": RSS_GROWTH_MIB,
        "sessions_left": len(app.SESSIONS), "gradio_sessions_left": len(server.state_holder.session_data),
    }
    print(json.dumps(report, indent=1))
    if os.environ.get("SLOWFAST_LOAD_REPORT"):
        Path(os.environ["SLOWFAST_LOAD_REPORT"]).write_text(json.dumps(report, indent=1) + "\n")
    assert not failures, failures
    assert overlaps == 0 and DECODES.max_active == 1
    assert len(orphans) == CLIENTS * ROUNDS and all(stopped for _, _, stopped in orphans), orphans
    assert all(n < LONG["gen_length"] for _, n, _ in orphans)
    # gradio_client sessions end with their heartbeat; the raw disconnects never opened one,
    # so theirs wait for the session TTL, holding a stopped run only
    assert len(app.SESSIONS) <= disconnects
    assert all(st.get("run") is None or st["run"].done.is_set() for st, _ in app.SESSIONS._states.values())
    # Gradio's own per-browser state goes with ours (it kept every client's for an hour)
    assert len(server.state_holder.session_data) <= disconnects + 1, len(server.state_holder.session_data)
    assert growth <= RSS_GROWTH_MIB, (rss_rounds, growth)
