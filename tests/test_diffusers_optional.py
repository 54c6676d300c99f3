"""diffusers is an optional extra: the app and the core library never import it (nor our integration)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_app_and_the_library_load_without_diffusers():
    code = ("import sys, app, slowfast.engine, slowfast.session, slowfast.models, slowfast.samplers, slowfast.trace; "
            "bad = sorted(m for m in sys.modules if m == 'diffusers' or m.startswith(('diffusers.', "
            "'slowfast.integrations'))); print(bad); sys.exit(1 if bad else 0)")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_integration_names_the_extra_when_diffusers_is_missing():
    code = ("import sys; sys.modules['diffusers'] = None\n"  # as if it were not installed
            "import slowfast.integrations.diffusers as d\n"
            "try:\n    d.SlowFastScheduler\nexcept ImportError as e:\n    print(e); sys.exit(0)\nsys.exit(1)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "pip install -r requirements-diffusers.txt" in done.stdout, done.stderr
