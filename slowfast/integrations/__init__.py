"""Bridges to other libraries, each optional: nothing in the core library imports this package.

``slowfast.integrations.diffusers``: our policies as a diffusers scheduler (``SlowFastScheduler``
for ``LLaDA2Pipeline``), any diffusers discrete pipeline's run recorded into a ``Trace``
(``TraceRecorder``), and our loaded models as a pipeline's ``model`` (``PipelineModel``).
Install the extra first: ``pip install -r requirements-diffusers.txt``.
"""
