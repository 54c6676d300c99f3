"""The command wing's end cases (issue 28): train never writes the shipped model unless told to,
a path the file system refuses is one line, and Ctrl-C ends a command with one line saying what
it kept (exit status 130), never a traceback."""
from __future__ import annotations

import json

import pytest

from slowfast.commands.cli import main
from slowfast.commands.common import INTERRUPTED
from slowfast.models.loading import EMBEDDED_DIR

TINY = ["--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--mlp-hidden", "64", "--threads", "1",
        "--batch-story", "2", "--batch-arithmetic", "2", "--batch-copy", "2", "--eval-n", "1", "--warmup", "2"]
LONG = "x" * 300 + ".json"  # one path component over the 255 bytes a file system takes


def one_line(capsys, start: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(start) and "\n" not in err and "Traceback" not in err, err
    return err


# --- train never replaces the shipped model by default ---------------------------------------------


def test_train_without_out_is_refused_before_anything_is_written(tmp_path, capsys):
    shipped = {p.name: p.stat().st_mtime_ns for p in EMBEDDED_DIR.iterdir()}
    work = tmp_path / "work"
    assert main(["train", *TINY, "--steps", "2", "--work-dir", str(work)]) == 2
    err = one_line(capsys, "error: --out: missing")
    assert "slowfast/models/embedded" in err and "--no-export" in err
    assert not work.exists()
    assert {p.name: p.stat().st_mtime_ns for p in EMBEDDED_DIR.iterdir()} == shipped


def test_train_help_says_out_is_required_and_names_the_shipped_folder(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "required unless" in out and "(default: None)" in out


# --- a path component the file system refuses --------------------------------------------------------


@pytest.mark.parametrize("argv, flag", [
    (["generate", "--prompt", "Q: 1+2=? A:", "--gen-length", "8", "--trace"], "--trace"),
    (["eval", "--tasks", "copy", "--n", "1", "--slider-task", "", "--json"], "--json"),
    (["bench", "tasks", "--task", "copy", "--count", "1", "--json"], "--json"),
    (["bench", "tasks", "--task", "copy", "--count", "1", "--md"], "--md"),
])
def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path, capsys, argv, flag):
    assert main(argv + [str(tmp_path / LONG)]) == 2
    err = one_line(capsys, f"error: {flag}: ")
    assert "File name too long" in err and len(err) < 300


def test_train_names_a_work_dir_too_long_in_one_line(tmp_path, capsys):
    assert main(["train", *TINY, "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / LONG)]) == 2
    assert "File name too long" in one_line(capsys, "error: --work-dir: ")


# --- Ctrl-C -----------------------------------------------------------------------------------------------


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_in_eval_keeps_nothing_and_says_so(tmp_path, capsys, monkeypatch):
    from slowfast.commands.evaluate import command

    monkeypatch.setattr(command, "evaluate_task", interrupt)
    out = tmp_path / "eval.json"
    assert main(["eval", "--tasks", "copy", "--n", "1", "--slider-task", "", "--json", str(out)]) == INTERRUPTED
    assert "nothing was written" in one_line(capsys, "interrupted: ")
    assert not out.exists()


def test_ctrl_c_in_bench_tasks_keeps_nothing_and_says_so(tmp_path, capsys, monkeypatch):
    from slowfast.commands.bench import tasks

    monkeypatch.setattr(tasks, "bench_task", interrupt)
    out = tmp_path / "bench.json"
    assert main(["bench", "tasks", "--task", "copy", "--count", "1", "--json", str(out)]) == INTERRUPTED
    assert "nothing was written" in one_line(capsys, "interrupted: ")
    assert not out.exists()


def test_ctrl_c_in_train_names_the_checkpoint_and_the_export_it_kept(tmp_path, capsys, monkeypatch):
    from slowfast.commands.train import loop

    step = loop.Trainer.train_step

    def step_then_interrupt(self, *args):
        if self.step == 1:  # after the first step's evaluation, export and checkpoint
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(loop.Trainer, "train_step", step_then_interrupt)
    work, out = tmp_path / "work", tmp_path / "out"
    code = main(["train", *TINY, "--steps", "3", "--eval-every", "1", "--work-dir", str(work), "--out", str(out)])
    assert code == INTERRUPTED
    err = one_line(capsys, "interrupted: ")
    assert f"the resume checkpoint {work / 'state.pt'} at step 1" in err and f"the export in {out} from step 1" in err
    assert json.loads((out / "training_info.json").read_text())["step"] == 1
    assert (work / "state.pt").is_file()


def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_kept(tmp_path, capsys, monkeypatch):
    from slowfast.commands.train import loop

    monkeypatch.setattr(loop.Trainer, "train_step", interrupt)
    work, out = tmp_path / "work", tmp_path / "out"
    assert main(["train", *TINY, "--steps", "3", "--work-dir", str(work), "--out", str(out)]) == INTERRUPTED
    assert "no checkpoint or export yet" in one_line(capsys, "interrupted: ")
    assert not out.exists()
