"""A broken or hostile model folder: one clear ModelLoadError naming the file, never a
traceback, never a prompt on stdin, and never the folder's own Python unless asked."""
import builtins
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from slowfast.commands.cli import main
from slowfast.models import ModelLoadError, load_model

SHARD = "model-00001-of-00012.safetensors"
INDEX = "model.safetensors.index.json"


@pytest.fixture
def folder(tiny_dir, tmp_path) -> Path:
    """A private copy of the session's tiny checkpoint, free to break."""
    return Path(shutil.copytree(tiny_dir, tmp_path / "model"))


@pytest.fixture(autouse=True)
def no_prompt(monkeypatch):
    """Loading must never ask a question on stdin (a Space has no one to answer)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the loader asked a question on stdin")

    monkeypatch.setattr(builtins, "input", refuse)


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    result = change(data)
    path.write_text(json.dumps(data if result is None else result))


def set_config(**values) -> Callable[[Path], None]:
    return lambda f: edit_json(f / "config.json", lambda c: c.update(values))


def shape_of(f: Path) -> None:
    """Swap in a wte with one row too few, keeping every other tensor."""
    from safetensors.torch import load_file, save_file

    for shard in sorted(f.glob("model-*.safetensors")):
        tensors = load_file(str(shard))
        if "model.transformer.wte.weight" in tensors:
            tensors["model.transformer.wte.weight"] = tensors["model.transformer.wte.weight"][:-1].contiguous()
            save_file(tensors, str(shard), metadata={"format": "pt"})
            return
    raise AssertionError("no wte in the checkpoint")


def drop_tensor(f: Path) -> None:
    from safetensors.torch import load_file, save_file

    shard = f / json.loads((f / INDEX).read_text())["weight_map"]["model.transformer.ln_f.weight"]
    tensors = load_file(str(shard))
    del tensors["model.transformer.ln_f.weight"]
    save_file(tensors, str(shard), metadata={"format": "pt"})


def set_template(text: str) -> Callable[[Path], None]:
    return lambda f: (f / "chat_template.jinja").write_text(text)


# (id, corruption, file the message names, words it must contain)
CASES = [
    ("truncated-shard", lambda f: (f / SHARD).write_bytes((f / SHARD).read_bytes()[:5000]), SHARD,
     "not a readable safetensors file"),
    ("garbage-shard", lambda f: (f / SHARD).write_bytes(b"<html>404 Not Found</html>" * 40), SHARD,
     "not a readable safetensors file"),
    ("empty-shard", lambda f: (f / SHARD).write_bytes(b""), SHARD, "not a readable safetensors file"),
    ("index-without-weight-map", lambda f: edit_json(f / INDEX, lambda d: d.pop("weight_map")), INDEX,
     "weight_map"),
    ("index-not-an-object", lambda f: (f / INDEX).write_text("[1, 2]"), INDEX, "not a JSON object"),
    ("weight-map-not-an-object", lambda f: edit_json(f / INDEX, lambda d: d.update(weight_map=["a"])), INDEX,
     "weight_map"),
    ("index-leaves-the-folder", lambda f: edit_json(
        f / INDEX, lambda d: d["weight_map"].update({"model.transformer.wte.weight": "../../etc/passwd"})),
     INDEX, "not a file name in this folder"),
    ("index-invalid-json", lambda f: (f / INDEX).write_text('{"weight_map": {'), INDEX, "invalid JSON at line 1"),
    ("config-invalid-json", lambda f: (f / "config.json").write_text('{\n  "d_model": 64,\n  oops\n}'),
     "config.json", "invalid JSON at line 3, column 3"),
    ("config-not-an-object", lambda f: (f / "config.json").write_text('"d_model"'), "config.json",
     "not a JSON object"),
    ("config-not-utf8", lambda f: (f / "config.json").write_bytes(b"\xff\xfe\x00garbage\x81"), "config.json",
     "JSON"),
    ("zero-heads", set_config(n_heads=0), "config.json", "n_heads must be a whole number above 0, not 0"),
    ("negative-layers", set_config(n_layers=-2), "config.json", "n_layers must be a whole number above 0"),
    ("zero-d-model", set_config(d_model=0), "config.json", "d_model must be a whole number above 0"),
    ("string-d-model", set_config(d_model="64"), "config.json", "d_model must be a whole number above 0"),
    ("heads-do-not-divide", set_config(n_heads=3, n_kv_heads=1), "config.json",
     "n_heads=3 does not divide d_model=64"),
    ("odd-head-size", set_config(d_model=60, n_heads=4), "config.json", "odd; RoPE needs an even one"),
    ("mask-id-outside-vocab", set_config(mask_token_id=10_000), "config.json",
     "mask_token_id=10000 is outside the vocabulary"),
    ("negative-mask-id", set_config(mask_token_id=-1), "config.json", "mask_token_id=-1 is outside"),
    ("tensor-missing", drop_tensor, INDEX, "tensor model.transformer.ln_f.weight is missing"),
    ("tensor-wrong-shape", shape_of, ".safetensors", "tensor model.transformer.wte.weight has shape (107, 64), "
     "config.json implies (108, 64)"),
    ("fewer-layers-in-config", set_config(n_layers=1), ".safetensors",
     "is not part of the network config.json describes"),
    ("tokenizer-invalid-json", lambda f: (f / "tokenizer.json").write_text('{"version": "1.0", '),
     "tokenizer.json", "invalid JSON at line 1"),
    ("tokenizer-config-invalid-json", lambda f: (f / "tokenizer_config.json").write_text("{'a': 1}"),
     "tokenizer_config.json", "invalid JSON"),
    ("chat-template-escapes-sandbox", set_template("{{ ''.__class__.__mro__[1].__subclasses__() }}"),
     "chat_template.jinja", "SecurityError"),
    ("chat-template-syntax", set_template("{% for m in messages %}{{ m['content'] }"), "chat_template.jinja",
     "TemplateSyntaxError"),
    ("chat-template-in-config-raises", lambda f: (
        (f / "chat_template.jinja").unlink(),
        edit_json(f / "tokenizer_config.json", lambda c: c.update(chat_template="{{ raise_exception('no') }}"))),
     "tokenizer_config.json (chat_template)", "cannot be rendered"),
]


@pytest.mark.parametrize("corrupt, file, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_folder_names_the_file(folder, corrupt, file, words):
    corrupt(folder)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), device="cpu")
    message = str(info.value)
    assert file in message and words in message, message
    assert str(folder) in message and "\n" not in message


def test_the_broken_files_load_when_repaired(folder):
    """The cases above break one thing each: the copy itself loads."""
    assert load_model(str(folder), device="cpu").mask_id == 2


@pytest.mark.parametrize("case", ["truncated-shard", "config-invalid-json", "tensor-wrong-shape"])
def test_cli_prints_one_error_line_and_exits_2(folder, capsys, case):
    dict((c[0], c[1]) for c in CASES)[case](folder)
    assert main(["generate", "--model", str(folder), "--prompt", "Hi", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(folder) in err
    assert "Traceback" not in captured.err + captured.out


def test_cli_subprocess_has_no_traceback(folder):
    (folder / "config.json").write_text("[]")
    proc = subprocess.run([sys.executable, "-m", "slowfast", "generate", "--model", str(folder), "--prompt", "Hi",
                           "--device", "cpu"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {folder / 'config.json'}: not a JSON object (it holds a list)"


@pytest.mark.parametrize("device", ["gpu7", "cuda:99"])
def test_bad_device_is_a_value_error(tiny_dir, device):
    with pytest.raises(ValueError, match="device: "):
        load_model(str(tiny_dir), device=device)


# ---------------------------------------------------------------- folders that bring their own code
def plant_code(folder: Path, marker: Path, tokenizer_class: str | None) -> None:
    """tokenizer_config.json points AutoTokenizer at evil.py, which leaves ``marker`` if imported."""
    (folder / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import PreTrainedTokenizerFast as EvilTokenizer\n"
    )

    def change(c: dict) -> None:
        c["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
        if tokenizer_class is None:
            c.pop("tokenizer_class", None)
        else:
            c["tokenizer_class"] = tokenizer_class

    edit_json(folder / "tokenizer_config.json", change)


def test_auto_map_beside_a_builtin_class_loads_the_plain_tokenizer(folder, tmp_path):
    """transformers 5 with trust_remote_code=False uses the declared built-in class."""
    marker = tmp_path / "marker"
    plant_code(folder, marker, tokenizer_class="TokenizersBackend")
    model = load_model(str(folder), device="cpu")
    assert not marker.exists()
    assert type(model.tokenizer).__module__.startswith("transformers.")
    assert model.decode(model.tokenizer("Hi")["input_ids"]) == "Hi"


@pytest.mark.parametrize("tokenizer_class", [None, "EvilTokenizer"])
def test_code_only_tokenizer_is_refused_with_the_flag_named(folder, tmp_path, tokenizer_class):
    marker = tmp_path / "marker"
    plant_code(folder, marker, tokenizer_class=tokenizer_class)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), device="cpu")
    message = str(info.value)
    assert "tokenizer_config.json" in message and "own Python code" in message
    assert "--trust-remote-code" in message and "\n" not in message
    assert not marker.exists()


def test_config_auto_map_neither_prompts_nor_runs(folder, tmp_path):
    """Official LLaDA config.json files carry an auto_map for AutoConfig; it is ignored."""
    marker = tmp_path / "marker"
    (folder / "configuration_evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\n")
    edit_json(folder / "config.json", lambda c: c.update(auto_map={"AutoConfig": "configuration_evil.EvilConfig"}))
    load_model(str(folder), device="cpu")
    assert not marker.exists()


def test_cli_refuses_code_in_a_subprocess_with_stdin_closed(folder, tmp_path):
    marker = tmp_path / "marker"
    plant_code(folder, marker, tokenizer_class=None)
    proc = subprocess.run([sys.executable, "-m", "slowfast", "generate", "--model", str(folder), "--prompt", "Hi",
                           "--device", "cpu"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "--trust-remote-code" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not marker.exists()


def test_trust_remote_code_reaches_transformers(folder, monkeypatch):
    """The flag goes from the CLI through load_model to AutoTokenizer; the default is False."""
    from transformers import AutoTokenizer

    seen = []
    original = AutoTokenizer.from_pretrained

    def spy(path, *args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy)
    load_model(str(folder), device="cpu")
    load_model(str(folder), device="cpu", trust_remote_code=True)
    base = ["generate", "--model", str(folder), "--prompt", "Hi", "--gen-length", "16", "--block-length", "16",
            "--device", "cpu"]
    assert main(base) == 0 and main(base + ["--trust-remote-code"]) == 0
    assert seen == [False, True, False, True]


def test_the_app_refuses_code_and_names_its_own_opt_in(folder, tmp_path, monkeypatch):
    """In the page the refusal names the page's box, and only the box lets the code run."""
    import app
    from slowfast.session import Controls

    marker = tmp_path / "marker"
    plant_code(folder, marker, tokenizer_class=None)
    c = Controls(gen_length=16, block_length=16, steps=16, sampler="baseline")
    values = [getattr(c, n) for n in app.CONTROL_NAMES]
    outputs = list(app.on_run(str(folder), "Hi", {}, *values))
    import html

    assert "Allow the model's own code" in html.unescape(outputs[-1][0]) and "--trust" not in outputs[-1][0]
    assert not marker.exists()
    monkeypatch.setenv("SLOWFAST_ONLY_MODELS", str(folder))  # a pinned public host ignores the box
    outputs = list(app.on_run(str(folder), "Hi", {"trust_remote_code": True}, *values))
    assert "Could not load" in outputs[-1][0] and not marker.exists()
    monkeypatch.delenv("SLOWFAST_ONLY_MODELS")
    # allowed: the folder's code runs (in a child process: imported code stays in a process)
    code = ("import app\nfrom slowfast.session import Controls\n"
            "c = Controls(gen_length=16, block_length=16, steps=16, sampler='baseline')\n"
            "state = {'trust_remote_code': True}\n"
            f"list(app.on_run({str(folder)!r}, 'Hi', state, *[getattr(c, n) for n in app.CONTROL_NAMES]))\n"
            "assert state['trace'].summary['finished']\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(app.__file__).parent, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert marker.exists()  # it ran, because the user allowed it
