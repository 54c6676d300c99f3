"""What every command shares, defined once: its flags' checks, its output files, its one-line
errors, the machine line and the command line its reports print.

A refused flag or input is a ``ValueError`` whose message starts with the flag; ``run``
prints it as one ``error:`` line (exit 2). Ctrl-C ends a command with one line saying what it
kept (exit 130), never a traceback.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from tqdm.auto import tqdm

from ..models.loading import ModelLoadError, parse_device

INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)
ONE_BLOCK = " (leave it out for one block: the generation length)"  # what a --block-length left out means


# --- running a command ------------------------------------------------------------------------------


def run(command: Callable[[], int], kept: Union[str, Callable[[], str]] = "nothing was written") -> int:
    """``command()``'s exit status; a refusal (``ValueError``, ``ModelLoadError``) is one
    ``error:`` line on stderr and status 2, Ctrl-C one ``interrupted:`` line saying what was
    ``kept`` (a callable is asked at that moment) and status 130."""
    try:
        return command()
    except (ValueError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: {kept() if callable(kept) else kept}", file=sys.stderr)
        return INTERRUPTED


# --- flags ----------------------------------------------------------------------------------------------


def at_least(value: Optional[int], flag: str, low: int = 1, unset: str = "") -> None:
    """Refuse a count below ``low`` (``None``, a flag left out, passes); ``unset`` says what leaving it out means."""
    if value is not None and value < low:
        raise ValueError(f"{flag}: {value} is not allowed; it must be >= {low}{unset}")


def finite(flag: str, value: Any) -> Any:
    """``value``, refused (ValueError) when it is a float that is not finite (inf, nan)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{flag}: {value} is not allowed; it must be a finite number")
    return value


def parse_param(text: str) -> tuple[str, Any]:
    """``name=value`` with value read as int, float, bool or string."""
    if "=" not in text:
        raise ValueError(f"--param: {text!r} is not allowed; use name=value")
    name, raw = text.split("=", 1)
    for cast in (int, float):
        try:
            return name.strip(), cast(raw)
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        return name.strip(), raw.lower() == "true"
    return name.strip(), raw


def device_flag(value: Optional[str]) -> torch.device:
    """``--device`` (default: CUDA when present), refused in one line when bad or absent here."""
    try:
        return parse_device(value)
    except ValueError as exc:  # its message starts "device: "
        raise ValueError(f"--{exc}") from None


# --- output files ---------------------------------------------------------------------------------------


def check_output_path(path: Union[str, Path], flag: str) -> None:
    """A file we can write at ``path`` (its folder exists and takes a new file; it is not a
    folder), checked before a command's work so that a finished run is never lost."""
    if not str(path).strip():
        raise ValueError(f"{flag}: {str(path)!r} is not allowed; allowed: a file path")
    target = Path(path)
    try:
        is_folder, folder = target.is_dir(), target.parent
        folder_exists = folder.is_dir()
    except OSError as exc:  # e.g. a name longer than the file system allows (errno 36)
        raise ValueError(f"{flag}: {str(path)[:80]}{'...' if len(str(path)) > 80 else ''} is not allowed "
                         f"({exc.strerror or exc}); allowed: a file path") from None
    if is_folder:
        raise ValueError(f"{flag}: {path} is a folder; allowed: a file path")
    if not folder_exists:
        raise ValueError(f"{flag}: the folder {folder} does not exist; create it first")
    try:  # a real write, as the run's will be (permissions alone miss read-only mounts and /proc)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".slowfast-", suffix=".check"):
            pass
    except OSError as exc:
        raise ValueError(f"{flag}: the folder {folder} is not writable ({exc.strerror or exc})") from None


def command_line(args: argparse.Namespace, prefix: str, parser: Optional[argparse.ArgumentParser] = None) -> str:
    """The command that reproduces ``args`` (its flags that differ from their defaults, in
    the parser's order), for a report; ``parser``: the one that parsed ``args`` (default:
    ``args.parser``)."""
    parts = [prefix]
    for action in (parser or args.parser)._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, None)
        if value == action.default:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            parts.append(action.option_strings[0 if value else 1])
        elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreConstAction)):
            parts.append(action.option_strings[0])
        elif isinstance(value, list):
            for v in value:
                parts += [action.option_strings[0], shlex.quote(str(v))]
        else:
            parts += [action.option_strings[0], shlex.quote(str(value))]
    return " ".join(parts)


# --- timing and the machine a timing depends on ------------------------------------------------------


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on a CPU), so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine(device: Any = "cpu", threads: Optional[int] = None, processes: int = 1) -> dict[str, Any]:
    """What a timing depends on, to print next to it."""
    dev = torch.device(device)
    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "threads": threads if threads is not None else torch.get_num_threads(), "processes": processes,
        "torch": torch.__version__, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = round(os.getloadavg()[0], 2)  # other work on the machine at the start
    return info


def machine_line(m: dict[str, Any]) -> str:
    where = m["gpu"] or f"{m['device']}"
    line = (f"{m['cpu']} ({m['cores']} cores) | {where} | {m['threads']} torch thread"
            f"{'s' if m['threads'] != 1 else ''} per process | {m['processes']} process"
            f"{'es' if m['processes'] != 1 else ''} | torch {m['torch']} | {m['date']}")
    if m.get("load_average") is not None:
        line += f" | load average {m['load_average']} at start"
    return line


def progress_bar(total: int, desc: str, enabled: bool = True):
    """tqdm on stderr, shown only on a terminal (and only where ``enabled``, e.g. rank 0)."""
    return tqdm(total=total, desc=desc, disable=not (enabled and sys.stderr.isatty()), leave=False,
                dynamic_ncols=True)
