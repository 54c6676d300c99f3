"""SlowFast Explorer: the Gradio app over the step engine (the wiring is in ``explorer/``).

Run locally with ``python app.py`` (127.0.0.1:7860 unless GRADIO_SERVER_NAME/PORT say
otherwise); the same file is a Hugging Face Space's ``app_file``. Everything shown comes
from ``visuals`` (pure functions of a Trace) and the engine's StepRecord stream.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry unless the host turns it on (see explorer/)

from explorer.compare import COMPARE_CONFIGS, on_compare, on_compare_end  # noqa: E402,F401
from explorer.controls import (  # noqa: F401
    CONTROL_NAMES, chat_template_of, controls_from, model_choices, on_check, on_model_change, on_preset, on_variant,
)
from explorer.files import on_export, on_replay, read_trace_upload  # noqa: F401
from explorer.glue import GRADIO_EVENT_TASK, named  # noqa: F401
from explorer.layout import build_app, launch
from explorer.run import on_chat, on_run, on_run_end, on_stop  # noqa: F401
from explorer.sessions import (  # noqa: F401
    DEVICE, POOL, PRESETS, SESSIONS, decode_for_space, device_waiting, end_session, gpu_seconds, load, loading_note,
    release_memory,
)
from explorer.tune import on_tune, on_tune_select  # noqa: F401

if __name__ == "__main__":
    launch(build_app(os.environ.get("SLOWFAST_MODEL", "embedded")))
