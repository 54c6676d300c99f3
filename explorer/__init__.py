"""The explorer's Gradio wiring, one concern per module; ``app.py`` is its entry point.

- ``glue``: Gradio adapters (named API parameters, the browser's session, cancellation).
- ``sessions``: what the server keeps (models, browser sessions, the device queue, loading).
- ``controls``: presets, defaults, the settings check, the model picker.
- ``run``: Run, chat and Stop; ``compare``, ``tune``, ``files`` (export, replay): their tabs.
- ``layout``: the page, every component and event.

No algorithm lives here: decoding is ``slowfast``'s, what a step shows is ``visuals``'.
"""
import os

# Gradio's telemetry and version check (api.gradio.app) are off unless the host turns them on
# (GRADIO_ANALYTICS_ENABLED=True); set here, before any module of this package imports gradio.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
