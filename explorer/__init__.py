"""The explorer's Gradio wiring, one concern per module; ``app.py`` is its entry point.

- ``glue``: Gradio adapters (named API parameters, the browser's session, cancellation).
- ``sessions``: what the server keeps (models, browser sessions, the device queue, loading).
- ``controls``: presets, defaults, the settings check, the model picker.
- ``run``: Run, chat and Stop; ``compare``, ``tune``, ``files`` (export, replay): their tabs.
- ``layout``: the page, every component and event.

No algorithm lives here: decoding is ``slowfast``'s, what a step shows is ``visuals``'.
"""
