"""Local folder or hub id -> config + safetensors + tokenizer -> a ready ``DLLM``.

Only safetensors are read (never pickle), and never with remote code unless the caller asks
(``trust_remote_code``). The layout is read off config.json: LLaDA's and Dream's checkpoints
run in our own ``Transformer`` (their official files alone, their ``auto_map`` ignored), and
any other checkpoint that transformers' ``AutoModelForMaskedLM`` loads runs through the
generic masked-LM adapter (``masked_lm.py``; no dLLM-Cache there). A folder that cannot load
raises ``ModelLoadError`` with one line naming the file and what is wrong in it, because that
line is all a user of the CLI or the app sees. ``KNOWN_MODELS`` and ``check_memory`` say what
the named models are and whether this machine has the memory for one.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from . import diffusion_gemma, dream
from . import llada2
from .dllm import DLLM
from .masked_lm import MaskedLMNet, is_masked_lm_config, wants_remote_masked_lm
from .transformer import ModelConfig, Transformer

LLADA, DREAM, MASKED_LM = "llada", dream.FAMILY, "masked-lm"
LLADA2 = llada2.FAMILY  # LLaDA2.x MoE, our block-causal network (llada2.py)
DIFFUSION_GEMMA = diffusion_gemma.FAMILY  # transformers' DiffusionGemmaForBlockDiffusion and its own generate

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
WEIGHT_PREFIX = "model."  # official names are model.transformer.*; ours are transformer.*
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Files a checkpoint folder needs; everything else in a hub repo (e.g. remote code) is skipped.
HUB_PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    INDEX_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
END_TOKENS = ("<|eot_id|>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>")


class ModelLoadError(RuntimeError):
    """A model could not be found, downloaded or read; the message says what to do."""


# --- what the named models are, and the memory they need ---------------------------------------

def parameter_count(cfg: ModelConfig) -> int:
    """Parameters of our transformer for ``cfg``, from its shapes alone (no weights built)."""
    d, kv, hid, rows = cfg.d_model, cfg.kv_heads * cfg.head_dim, cfg.hidden_size, cfg.rows
    bias = cfg.include_bias
    qkv_bias = bias or cfg.include_qkv_bias
    attn = 2 * d * d + 2 * d * kv + ((d + 2 * kv) if qkv_bias else 0) + (d if bias else 0)
    ffn = 3 * d * hid + ((2 * hid + d) if bias else 0)
    head = 0 if cfg.weight_tying else rows * d + (rows if bias else 0)
    return rows * d + cfg.n_layers * (attn + ffn + 2 * d) + d + head


# The shapes of the official config.json files (algorithms.md, section 5).
LLADA_8B = ModelConfig(d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288,
                       vocab_size=126464, embedding_size=126464, rope_theta=500000.0)
DREAM_7B = ModelConfig(d_model=3584, n_heads=28, n_kv_heads=4, n_layers=28, mlp_hidden_size=18944, vocab_size=152064,
                       max_sequence_length=131072, rope_theta=1e6, rms_norm_eps=1e-6, include_qkv_bias=True,
                       model_type=DREAM)


@dataclass(frozen=True)
class ModelInfo:
    """A model the app and the docs name: what loads it, its size, and whether dLLM-Cache works."""

    name: str
    family: str  # llada | dream | masked-lm
    parameters: int
    cache: bool
    chat: bool  # an instruct/chat model (its tokenizer has a chat template)
    summary: str

    def weight_bytes(self, dtype: torch.dtype | str = torch.bfloat16) -> int:
        dt = DTYPES[dtype] if isinstance(dtype, str) else dtype
        return self.parameters * torch.empty((), dtype=dt).element_size()


KNOWN_MODELS: dict[str, ModelInfo] = {m.name: m for m in (
    ModelInfo("GSAI-ML/LLaDA-8B-Instruct", LLADA, parameter_count(LLADA_8B), True, True,
              "LLaDA 8B instruct, our transformer"),
    ModelInfo("GSAI-ML/LLaDA-8B-Base", LLADA, parameter_count(LLADA_8B), True, False,
              "LLaDA 8B base, our transformer"),
    ModelInfo("GSAI-ML/LLaDA-1.5", LLADA, parameter_count(LLADA_8B), True, True,
              "LLaDA 1.5 (8B, VRPO-tuned instruct), our transformer"),
    ModelInfo("Dream-org/Dream-v0-Instruct-7B", DREAM, parameter_count(DREAM_7B), True, True,
              "Dream 7B instruct, our transformer (Qwen2.5 shape, shifted logits)"),
    ModelInfo("Dream-org/Dream-v0-Base-7B", DREAM, parameter_count(DREAM_7B), True, False,
              "Dream 7B base, our transformer (Qwen2.5 shape, shifted logits)"),
    # ModernBERT-base / -large sizes as published by Answer.AI (149M / 395M), rounded
    # 26B parameters in all (about 4B active per token, MoE), as its name says; bf16 weights ~52 GB
    ModelInfo("google/diffusiongemma-26B-A4B-it", DIFFUSION_GEMMA, 26_000_000_000, False, True,
              "DiffusionGemma 26B-A4B instruct (uniform-noise block diffusion), transformers' own class and generate"),
    # LLaDA2.x instruct MoE models; sizes as their model cards name them (16B, 100B in all), rounded
    ModelInfo("inclusionAI/LLaDA2.1-mini", LLADA2, 16_000_000_000, False, True,
              "LLaDA2.1 mini (16B MoE, token editing), our block-causal network, no remote code"),
    ModelInfo("inclusionAI/LLaDA2.0-mini", LLADA2, 16_000_000_000, False, True,
              "LLaDA2.0 mini (16B MoE), our block-causal network, no remote code"),
    ModelInfo("inclusionAI/LLaDA2.1-flash", LLADA2, 100_000_000_000, False, True,
              "LLaDA2.1 flash (100B MoE, token editing), our block-causal network, no remote code"),
    ModelInfo("dllm-hub/ModernBERT-base-chat-v0.1", MASKED_LM, 149_000_000, False, True,
              "ModernBERT-base chat dLLM, transformers' ModernBertForMaskedLM; runs on a laptop CPU"),
    ModelInfo("dllm-hub/ModernBERT-large-chat-v0.1", MASKED_LM, 395_000_000, False, True,
              "ModernBERT-large chat dLLM, transformers' ModernBertForMaskedLM; runs on a laptop CPU"),
)}

MEMORY_MARGIN = 1.2  # weights + 20% for activations, logits and dLLM-Cache's features (an estimate)


def memory_needed(parameters: int, dtype: torch.dtype | str = torch.bfloat16) -> int:
    """Bytes a model of ``parameters`` needs loaded in ``dtype`` and decoding: its weights plus
    a 20% margin (an estimate: the logits of a long canvas and the cache grow with length)."""
    dt = DTYPES[dtype] if isinstance(dtype, str) else dtype
    return int(parameters * torch.empty((), dtype=dt).element_size() * MEMORY_MARGIN)


def memory_available(device: Optional[str | torch.device] = None) -> Optional[int]:
    """Bytes this machine can give a model on ``device``: a GPU's total memory (a GPU holds one
    model at a time), the memory the OS reports available on a CPU; None if unknown."""
    dev = parse_device(device)
    if dev.type == "cuda":
        return int(torch.cuda.get_device_properties(dev).total_memory)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def count_checkpoint_parameters(folder: Path) -> Optional[int]:
    """Parameters in a folder's safetensors, from their headers (no tensor is read)."""
    from safetensors import safe_open

    try:
        total = 0
        for file in weight_files(folder):
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    total += math.prod(f.get_slice(key).get_shape())
        return total
    except Exception:  # noqa: BLE001 - a folder that does not load says so when it is loaded
        return None


def model_info(name: str) -> Optional[ModelInfo]:
    """What ``name`` is: a known hub id, ``embedded`` or a local folder (read from its files,
    nothing downloaded); None for an unknown hub id or an unreadable folder."""
    name = (name or "").strip()
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name]
    folder = EMBEDDED_DIR if name == "embedded" else Path(name).expanduser()
    if not (folder / "config.json").is_file():
        return None
    try:
        raw, path = read_raw_config(folder)
        family = checkpoint_family(raw, path)  # a folder that needs its own code: size unknown here
    except ModelLoadError:
        return None
    params = count_checkpoint_parameters(folder)
    if params is None:
        return None
    has_chat = (folder / "chat_template.jinja").is_file() or "chat_template" in (
        (folder / "tokenizer_config.json").read_text(errors="replace")
        if (folder / "tokenizer_config.json").is_file() else "")
    return ModelInfo(name, family, params, family != LLADA2 and family not in (MASKED_LM, DIFFUSION_GEMMA), has_chat,
                     f"{family} checkpoint in {folder}")


@dataclass(frozen=True)
class MemoryCheck:
    """Whether a model fits this machine: for a warning before a long load."""

    name: str
    device: str
    dtype: str
    parameters: Optional[int]
    needed: Optional[int]  # bytes, weights + margin
    available: Optional[int]  # bytes
    fits: Optional[bool]  # None when either side is unknown
    message: str


def check_memory(name: str, device: Optional[str | torch.device] = None,
                 dtype: Optional[str | torch.dtype] = None) -> MemoryCheck:
    """How much memory ``name`` needs on ``device`` in ``dtype`` (the loader's defaults: fp32 on
    a CPU, bf16 on CUDA) and whether this machine has it; the message is one line for a user."""
    dev = parse_device(device)
    dt = parse_dtype(dtype, dev)
    dt_name = next((k for k, v in DTYPES.items() if v == dt), str(dt))
    info = model_info(name)
    available = memory_available(dev)
    gb = lambda b: f"{b / 1e9:.1f} GB" if b >= 1e9 else f"{b / 1e6:.0f} MB"  # noqa: E731
    if info is None:
        return MemoryCheck(name, str(dev), dt_name, None, None, available, None,
                           f"{name}: size unknown until it is downloaded; check its model card")
    needed = memory_needed(info.parameters, dt)
    fits = None if available is None else needed <= available
    size = f"{info.parameters / 1e9:.2f}B" if info.parameters >= 1e9 else f"{info.parameters / 1e6:.1f}M"
    text = (f"{name}: {size} parameters, needs about {gb(needed)} in {dt_name} "
            f"({gb(info.weight_bytes(dt))} of weights; bf16 {gb(info.weight_bytes(torch.bfloat16))}, "
            f"fp32 {gb(info.weight_bytes(torch.float32))})")
    if available is not None:
        text += f"; {dev.type} has {gb(available)}" + ("" if fits else ": not enough memory")
    if dev.type == "cpu" and info.parameters >= 1e9:
        text += "; on a CPU every forward of a model this size takes seconds"
    return MemoryCheck(name, str(dev), dt_name, info.parameters, needed, available, fits, text)


# JSON files transformers reads for a tokenizer; we parse them first so that a broken one is
# named with its line and column instead of surfacing as a parser error from deep inside.
TOKENIZER_JSON_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "added_tokens.json", "chat_template.json")
# config.json fields that size the network: each must be a whole number above zero.
POSITIVE_INTS = ("d_model", "n_heads", "n_layers", "vocab_size", "max_sequence_length", "mlp_ratio")
OPTIONAL_POSITIVE_INTS = ("n_kv_heads", "mlp_hidden_size", "embedding_size")  # None: derived
POSITIVE_NUMBERS = ("rope_theta", "rms_norm_eps")


def describe(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line (library messages span lines; ours must not)."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_json(path: Path) -> Any:
    """Parse a JSON file; a failure names the file and, for bad syntax, the line and column."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot be read ({exc.strerror or describe(exc)})") from exc
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})") from exc
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ModelLoadError(f"{path}: not JSON text ({describe(exc)})") from exc


ALTERNATIVES = (
    "Use a local folder that holds config.json, the *.safetensors weights and the tokenizer "
    "files (--model /path/to/folder), or the shipped model (--model embedded)."
)


def resolve_model_dir(name: str, trust_remote_code: bool = False) -> Path:
    """Map ``embedded``, a local folder or a hub id to a local folder, downloading if needed.

    A hub download takes the folder's Python files only when ``trust_remote_code`` is set,
    since only then may they run."""
    if not name or not name.strip():
        raise ValueError("model: an empty name; allowed: 'embedded', a local folder or a hub id")
    name = name.strip()
    if name == "embedded":
        if not (EMBEDDED_DIR / "config.json").is_file():
            raise ModelLoadError(
                f"the embedded model is not in this checkout ({EMBEDDED_DIR} has no config.json). "
                "Pass a local checkpoint folder with --model."
            )
        return EMBEDDED_DIR
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") != 1 or local.exists()
    if looks_like_path:
        raise ModelLoadError(f"model '{name}': no such folder, and not a hub id (owner/name). {ALTERNATIVES}")
    try:
        from huggingface_hub import snapshot_download

        patterns = HUB_PATTERNS + ["*.py"] if trust_remote_code else HUB_PATTERNS
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as exc:  # network, auth, missing repo: one clear message
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"could not get model '{name}' from the Hugging Face Hub ({type(exc).__name__}: {reason}). "
            f"{ALTERNATIVES}"
        ) from exc


def check_config_values(raw: dict[str, Any], path: Path, keys: Optional[dict[str, str]] = None) -> None:
    """Refuse sizes and ids that would fail later, deep in torch, with no file named.

    ``raw`` uses our ModelConfig names (LLaDA's); ``keys`` maps them to the file's own names
    for the messages (Dream's, whose mask and eos ids may be left to the tokenizer)."""
    keys = keys or {}
    defaults = ModelConfig().to_dict()  # what from_dict fills in for absent fields
    values = {**defaults, **{k: v for k, v in raw.items() if k in defaults}}

    def name(key: str) -> str:
        return keys.get(key, key)

    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    for key in POSITIVE_INTS + OPTIONAL_POSITIVE_INTS:
        v = values[key]
        if (v is not None or key in POSITIVE_INTS) and not (whole(v) and v > 0):
            raise ModelLoadError(f"{path}: {name(key)} must be a whole number above 0, not {v!r}")
    for key in POSITIVE_NUMBERS:
        v = values[key]
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
            raise ModelLoadError(f"{path}: {name(key)} must be a number above 0, not {v!r}")
    d, h, kv = values["d_model"], values["n_heads"], values["n_kv_heads"] or values["n_heads"]
    if d % h:
        raise ModelLoadError(f"{path}: {name('n_heads')}={h} does not divide {name('d_model')}={d}")
    if (d // h) % 2:
        raise ModelLoadError(f"{path}: the head size {name('d_model')} / {name('n_heads')} = {d // h} is odd; "
                             "RoPE needs an even one")
    if h % kv:
        raise ModelLoadError(f"{path}: {name('n_kv_heads')}={kv} does not divide {name('n_heads')}={h}")
    vocab, rows = values["vocab_size"], values["embedding_size"] or values["vocab_size"]
    if rows < vocab:
        raise ModelLoadError(f"{path}: embedding_size={rows} is smaller than vocab_size={vocab}")
    for key in ("mask_token_id", "eos_token_id"):
        v = values[key]
        if v is None and keys:  # Dream: the tokenizer names its special tokens
            continue
        if not (whole(v) and 0 <= v < vocab):
            raise ModelLoadError(f"{path}: {name(key)}={v!r} is outside the vocabulary (0..{vocab - 1})")


def read_raw_config(folder: Path) -> tuple[dict[str, Any], Path]:
    """config.json as a dict (and its path); a missing or broken one names the file."""
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder} has no config.json. {ALTERNATIVES}")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: not a JSON object (it holds a {type(raw).__name__})")
    return raw, path


def checkpoint_family(raw: dict[str, Any], path: Path, trust_remote_code: bool = False) -> str:
    """Which loader a config.json asks for: ``llada`` (our transformer, LLaDA's names),
    ``dream`` (our transformer, Dream's names) or ``masked-lm`` (transformers' own class)."""
    if all(k in raw for k in ("d_model", "n_heads", "n_layers")):
        return LLADA
    if dream.is_dream_config(raw):
        return DREAM
    if llada2.is_llada2_config(raw):
        return LLADA2
    if diffusion_gemma.is_diffusion_gemma_config(raw):
        return DIFFUSION_GEMMA
    if is_masked_lm_config(raw):
        return MASKED_LM
    if wants_remote_masked_lm(raw):
        if trust_remote_code:
            return MASKED_LM
        raise ModelLoadError(
            f"{path}: the folder wants to run its own Python code to build its masked LM (auto_map); it is not "
            "run by default. Only if you trust this folder, allow it with --trust-remote-code "
            "(load_model(..., trust_remote_code=True))"
        )
    missing = [k for k in ("d_model", "n_heads", "n_layers") if k not in raw]
    raise ModelLoadError(
        f"{path} is not a LLaDA-family config (model_type={raw.get('model_type')!r}, "
        f"missing {', '.join(missing)}), nor Dream's (model_type 'Dream'), nor a masked LM transformers knows; "
        f"supported: LLaDA- and Dream-layout checkpoints and transformers masked LMs, such as "
        f"{', '.join(KNOWN_MODELS)}"
    )


def llada_config(raw: dict[str, Any], path: Path) -> ModelConfig:
    check_config_values(raw, path)
    try:
        return ModelConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc


def dream_config(raw: dict[str, Any], path: Path) -> tuple[ModelConfig, list[int]]:
    """Our ModelConfig from Dream's config.json keys (and every eos id it names)."""
    missing = [k for k in dream.REQUIRED if k not in raw]
    if missing:
        raise ModelLoadError(f"{path}: a Dream config without {', '.join(missing)}")
    bad = dream.unsupported(raw)
    if bad:
        raise ModelLoadError(f"{path}: unsupported model configuration: " + "; ".join(bad))
    fields, eos_ids = dream.config_fields(raw)
    check_config_values(fields, path, keys=dream.CONFIG_KEYS)
    try:
        return ModelConfig.from_dict(fields), eos_ids
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc


def read_config(folder: Path) -> ModelConfig:
    """Our network's ModelConfig from a LLaDA- or Dream-layout folder's config.json."""
    raw, path = read_raw_config(folder)
    family = checkpoint_family(raw, path)
    if family in (MASKED_LM, DIFFUSION_GEMMA):
        raise ModelLoadError(f"{path}: a transformers model ({raw.get('model_type')!r}), not a network of ours")
    return llada_config(raw, path) if family == LLADA else dream_config(raw, path)[0]


class LLaDANames:
    """LLaDA's checkpoint tensor names (``model.transformer.*``) <-> ours (``transformer.*``)."""

    def ours(self, key: str) -> str:
        return key[len(WEIGHT_PREFIX):] if key.startswith(WEIGHT_PREFIX) else key

    def theirs(self, name: str) -> str:
        return WEIGHT_PREFIX + name


TENSOR_NAMES = {LLADA: LLaDANames(), DREAM: dream.DreamNames()}


def weights_location(folder: Path) -> Path:
    """The file that says where the weights are: the shard index, or the single file."""
    index = folder / INDEX_FILE
    return index if index.is_file() else folder / SINGLE_FILE


def weight_files(folder: Path) -> list[Path]:
    index = folder / INDEX_FILE
    if index.is_file():
        raw = read_json(index)
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{index}: not a JSON object (it holds a {type(raw).__name__})")
        weight_map = raw.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(f"{index}: no \"weight_map\" object naming each tensor's shard file")
        names = set(weight_map.values())
        # plain file names only: an index must not point the loader at files outside the folder
        bad = sorted((repr(n) for n in names if not isinstance(n, str) or n in ("", ".", "..") or Path(n).name != n))
        if bad:
            raise ModelLoadError(f"{index}: weight_map names {bad[0]}, not a file name in this folder")
        files = [folder / n for n in sorted(names)]
    else:
        files = [folder / SINGLE_FILE]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise ModelLoadError(f"{folder} lacks weight files: {', '.join(absent)}. {ALTERNATIVES}")
    return files


FINITE_CHUNK = 1 << 24  # elements checked for NaN/inf at a time (bounds the check's temporary memory)


def all_finite(t: torch.Tensor) -> bool:
    """Whether every value of ``t`` is finite (no NaN, no inf), in chunks on its own device."""
    flat = t.reshape(-1)
    return all(bool(torch.isfinite(flat[i:i + FINITE_CHUNK]).all()) for i in range(0, flat.numel(), FINITE_CHUNK))


def checked_weight(tensor: torch.Tensor, dtype: torch.dtype, file: Path, key: str) -> torch.Tensor:
    """``tensor`` (checkpoint tensor ``key`` of ``file``) in ``dtype``, refused with a
    ModelLoadError when the network would silently get it wrong: values that are not floating
    point (int8 or other quantized or integer weights would be cast as if they were the
    weights), or NaN or infinite values, in the file or from the cast to ``dtype`` (a model
    that decodes nothing but noise). One pass over each tensor, once, at load time."""
    if not tensor.is_floating_point():
        raise ModelLoadError(f"{file}: tensor {key} holds {str(tensor.dtype).replace('torch.', '')} values; the "
                             "network's weights are floating point (float32, bfloat16 or float16): use an "
                             "unquantized checkpoint")
    out = tensor.to(dtype)
    if not all_finite(out):
        if not all_finite(tensor):
            raise ModelLoadError(f"{file}: tensor {key} holds NaN or infinite values; the checkpoint is corrupt "
                                 "(or from a diverged training run): download or copy it again, or use another")
        name = str(dtype).replace("torch.", "")
        raise ModelLoadError(f"{file}: tensor {key} holds values beyond {name}'s range (they are finite in the "
                             f"file's {str(tensor.dtype).replace('torch.', '')}); load it in float32 or bfloat16 "
                             "(--dtype)")
    return out


def load_weights(folder: Path, device: torch.device, dtype: torch.dtype,
                 sources: Optional[dict[str, Path]] = None, names: Any = None) -> dict[str, torch.Tensor]:
    """Read every shard straight onto ``device`` in ``dtype``, under our parameter names
    (``names``: the layout's name map, LLaDA's by default); ``sources`` (when given) records
    each tensor's file, for error messages."""
    from safetensors import SafetensorError, safe_open

    names = names or TENSOR_NAMES[LLADA]
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {} if sources is None else sources
    for file in weight_files(folder):
        try:
            with safe_open(str(file), framework="pt", device=str(device)) as f:
                for key in f.keys():
                    name = names.ours(key)
                    if name in origin:
                        raise ModelLoadError(f"{file}: tensor {key} is also in {origin[name].name}")
                    state[name] = checked_weight(f.get_tensor(key), dtype, file, key)
                    origin[name] = file
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{file}: not a readable safetensors file ({describe(exc)}); "
                                 "it may be truncated or corrupt: download or copy it again") from exc
    return state


def build_model(cfg: ModelConfig, state: dict[str, torch.Tensor], where: str,
                sources: Optional[dict[str, Path]] = None, names: Any = None) -> Transformer:
    """Our network with ``state`` as its weights; every tensor must exist with the shape
    config.json implies (``where`` names the weights in messages, ``sources`` each tensor's file,
    ``names`` maps our names back to the checkpoint's)."""
    names = names or TENSOR_NAMES[LLADA]
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = [name for name in expected if name not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelLoadError(f"{where}: tensor {names.theirs(missing[0])} is missing{more}; config.json "
                             f"implies shape {expected[missing[0]]}")
    sources = sources or {}
    for name, tensor in state.items():
        file = sources.get(name, where)
        if name not in expected:
            raise ModelLoadError(f"{file}: tensor {names.theirs(name)} is not part of the network config.json "
                                 f"describes (n_layers={cfg.n_layers}, weight_tying={cfg.weight_tying})")
        if tuple(tensor.shape) != expected[name]:
            raise ModelLoadError(f"{file}: tensor {names.theirs(name)} has shape {tuple(tensor.shape)}, "
                                 f"config.json implies {expected[name]}")
    model.load_state_dict(state, assign=True)
    return model.eval()


def save_checkpoint(model: Transformer, folder: Path | str, max_shard_bytes: Optional[int] = None) -> Path:
    """Write ``config.json`` and safetensors in the official LLaDA layout (sharded with an
    index when ``max_shard_bytes`` is given), e.g. for the embedded model or tests."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LLaDAModelLM"], **model.cfg.to_dict()}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tensors = {WEIGHT_PREFIX + k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return write_safetensors(tensors, folder, max_shard_bytes)


def write_safetensors(tensors: dict[str, torch.Tensor], folder: Path, max_shard_bytes: Optional[int] = None) -> Path:
    """``model.safetensors``, or shards of at most ``max_shard_bytes`` with their index, as the
    hub lays them out."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    if max_shard_bytes is None:
        save_file(tensors, str(folder / SINGLE_FILE), metadata={"format": "pt"})
        return folder
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return folder


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_device(device: Optional[str | torch.device]) -> torch.device:
    """The device asked for; a bad name or an absent GPU is the caller's input error."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: {device!r} is not allowed; allowed: cpu, cuda, cuda:N") from exc
    if dev.type not in ("cpu", "cuda", "mps"):  # e.g. meta: no weights, nothing to decode with
        raise ValueError(f"device: {device!r} is not allowed; allowed: cpu, cuda, cuda:N, mps")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device: {device!r} is not available here (no MPS)")
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device: {device!r} is not available here ({torch.cuda.device_count()} CUDA devices)")
    return dev


def parse_dtype(dtype: Optional[str | torch.dtype], device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not allowed; allowed: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_tokenizer(folder: Path, trust_remote_code: bool = False, cls: Optional[type] = None) -> Any:
    """The folder's tokenizer through transformers, never asking on stdin: with
    ``trust_remote_code`` False transformers loads the declared built-in class or refuses.
    ``cls`` reads it with that built-in class instead of the one the folder declares (Dream's
    DreamTokenizer is Qwen2's tokenizer under another name)."""
    for fname in TOKENIZER_JSON_FILES:
        if (folder / fname).is_file():
            data = read_json(folder / fname)
            if fname == "tokenizer_config.json" and not isinstance(data, dict):
                raise ModelLoadError(f"{folder / fname}: not a JSON object (it holds a {type(data).__name__})")
    try:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # it warns that config.json's model_type is not its own
        try:
            if cls is not None:
                return cls.from_pretrained(str(folder))
            return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        finally:
            hf_logging.set_verbosity(verbosity)
    except Exception as exc:
        if not trust_remote_code and "trust_remote_code" in str(exc):
            raise ModelLoadError(
                f"{folder / 'tokenizer_config.json'}: the folder wants to run its own Python code to build its "
                "tokenizer (auto_map); it is not run by default. Only if you trust this folder, allow it with "
                "--trust-remote-code (load_model(..., trust_remote_code=True))"
            ) from exc
        raise ModelLoadError(f"could not load the tokenizer from {folder} (tokenizer.json, "
                             f"tokenizer_config.json): {describe(exc)}") from exc


def check_chat_template(tokenizer: Any, folder: Path) -> None:
    """Render a one-message conversation now, so that a template transformers' sandbox
    rejects fails at load time with its file named, not in the middle of a run."""
    if not getattr(tokenizer, "chat_template", None):
        return
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True,
                                      tokenize=False)
    except Exception as exc:
        jinja = folder / "chat_template.jinja"
        where = jinja if jinja.is_file() else f"{folder / 'tokenizer_config.json'} (chat_template)"
        raise ModelLoadError(f"{where}: the chat template cannot be rendered ({describe(exc)}); "
                             "fix or remove it") from exc


def end_ids(tokenizer: Any, *ids: Optional[int]) -> set[int]:
    """End-of-text ids: those given, the tokenizer's eos, and the usual end tokens it has."""
    eos = {int(i) for i in ids if i is not None}
    if getattr(tokenizer, "eos_token_id", None) is not None:
        eos.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    eos.update(vocab[t] for t in END_TOKENS if t in vocab)
    return eos


def tokenizer_mask_id(tokenizer: Any, folder: Path, config_id: Optional[int], path: Path) -> int:
    """The mask token's id as the tokenizer names it, cross-checked with config.json's."""
    mask_id = getattr(tokenizer, "mask_token_id", None)
    where = folder / "tokenizer_config.json"
    if mask_id is None:
        if config_id is None:
            raise ModelLoadError(f"{where}: the tokenizer has no mask token (mask_token), and {path.name} names "
                                 "none; a diffusion LM needs one")
        return int(config_id)
    if config_id is not None and int(config_id) != int(mask_id):
        raise ModelLoadError(f"{where}: the tokenizer's mask token {tokenizer.mask_token!r} has id {mask_id}, but "
                             f"{path} says mask_token_id={config_id}")
    return int(mask_id)


def load_model(
    name: str,
    device: Optional[str | torch.device] = None,
    dtype: Optional[str | torch.dtype] = None,
    *,
    trust_remote_code: bool = False,
) -> DLLM:
    """Load ``embedded``, a local folder or a hub id; fp32 on CPU, bf16 on CUDA.

    The folder's config.json decides how: LLaDA's and Dream's layouts run in our transformer
    (Dream with shifted logits and Qwen2's tokenizer), any other masked LM transformers
    loads runs through the masked-LM adapter. ``trust_remote_code`` lets the folder's own
    Python build its tokenizer (or its masked LM): off by default, since a model folder (or
    a hub repo) is data and must not run code on this machine.
    Bad arguments raise ValueError; anything wrong with the model raises ModelLoadError."""
    dev = parse_device(device)  # bad arguments fail before anything is resolved or downloaded
    dt = parse_dtype(dtype, dev)
    folder = resolve_model_dir(name, trust_remote_code=trust_remote_code)
    try:
        raw, path = read_raw_config(folder)
        family = checkpoint_family(raw, path, trust_remote_code)
        if family == MASKED_LM:
            return load_masked_lm(name, folder, raw, dev, dt, trust_remote_code)
        if family == LLADA2:
            return load_llada2(name, folder, raw, path, dev, dt, trust_remote_code)
        if family == DIFFUSION_GEMMA:
            return load_checked_diffusion_gemma(name, folder, raw, dev, dt, trust_remote_code)
        eos_config: list[int] = []
        if family == DREAM:
            cfg, eos_config = dream_config(raw, path)
        else:
            cfg = llada_config(raw, path)
        names = TENSOR_NAMES[family]
        sources: dict[str, Path] = {}
        state = load_weights(folder, dev, dt, sources, names)
        net = build_model(cfg, state, str(weights_location(folder)), sources, names)
        cls = dream.tokenizer_class(trust_remote_code) if family == DREAM else None
        tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code, cls=cls)
        check_chat_template(tokenizer, folder)
        if family == DREAM:  # special tokens from the tokenizer, never hard-coded
            mask_id = tokenizer_mask_id(tokenizer, folder, cfg.mask_token_id, path)
            if not 0 <= mask_id < cfg.vocab_size:
                raise ModelLoadError(f"{folder / 'tokenizer_config.json'}: the mask token's id {mask_id} is outside "
                                     f"the vocabulary of {path} (0..{cfg.vocab_size - 1})")
            net.cfg.mask_token_id = mask_id
            eos = end_ids(tokenizer, *eos_config)
        else:
            mask_id = cfg.mask_token_id
            eos = end_ids(tokenizer, cfg.eos_token_id)
        eos.discard(mask_id)
    except ModelLoadError:
        raise
    except Exception as exc:  # anything unforeseen still reaches the user as one line
        raise ModelLoadError(f"could not load the model in {folder}: {describe(exc)}") from exc
    return DLLM(name=name, net=net, tokenizer=tokenizer, mask_id=mask_id, eos_ids=frozenset(eos), folder=folder,
                shift_logits=family == DREAM, family=family)


def load_checked_diffusion_gemma(name: str, folder: Path, raw: dict, dev: torch.device, dt: torch.dtype,
                                 trust_remote_code: bool) -> DLLM:
    """A DiffusionGemma checkpoint through transformers (``diffusion_gemma.py``), with the
    checks every family gets: its weight files, its tokenizer's chat template, finite weights."""
    weight_files(folder)  # the usual message when a shard is missing
    tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
    check_chat_template(tokenizer, folder)
    model = diffusion_gemma.load_diffusion_gemma(name, folder, raw, dev, dt, tokenizer)
    for key, tensor in model.net.state_dict().items():  # transformers read the weights: NaN or inf is refused
        if tensor.is_floating_point() and not all_finite(tensor):
            raise ModelLoadError(f"{weights_location(folder)}: tensor {key} holds NaN or infinite values; the "
                                 "checkpoint is corrupt: download or copy it again, or use another")
    return model


class SameNames:
    """A layout whose checkpoint names are our parameter names (LLaDA2's)."""

    def ours(self, key: str) -> str:
        return key

    def theirs(self, name: str) -> str:
        return name


def load_llada2(name: str, folder: Path, raw: dict[str, Any], path: Path, device: torch.device,
                dtype: torch.dtype, trust_remote_code: bool = False) -> DLLM:
    """A LLaDA2.x folder in our block-causal MoE network (``llada2.py``; its modeling code is
    never run): config.json checked key by key, every official tensor with the shape it implies,
    the mask and end tokens from the tokenizer (cross-checked with config.json's ids)."""
    try:
        cfg = llada2.Config.from_json(raw)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unsupported LLaDA2 configuration: {describe(exc)}") from exc
    sources: dict[str, Path] = {}
    state = load_weights(folder, device, dtype, sources, SameNames())
    expected, where = llada2.expected_shapes(cfg), str(weights_location(folder))
    missing = [k for k in expected if k not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelLoadError(f"{where}: tensor {missing[0]} is missing{more}; config.json implies shape "
                             f"{expected[missing[0]]}")
    for key, tensor in state.items():
        if key not in expected or tuple(tensor.shape) != expected[key]:
            what = "is not part of the network config.json describes" if key not in expected else (
                f"has shape {tuple(tensor.shape)}, config.json implies {expected[key]}")
            raise ModelLoadError(f"{sources.get(key, where)}: tensor {key} {what}")
    net = llada2.build(cfg)
    net.load_state_dict(state, assign=True)
    net.eval()
    tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
    check_chat_template(tokenizer, folder)
    mask_id = tokenizer_mask_id(tokenizer, folder, cfg.mask_token_id, path)
    if not 0 <= mask_id < cfg.vocab_size:
        raise ModelLoadError(f"{folder / 'tokenizer_config.json'}: the mask token's id {mask_id} is outside the "
                             f"vocabulary of {path} (0..{cfg.vocab_size - 1})")
    eos = end_ids(tokenizer, cfg.eos_token_id)
    eos.discard(mask_id)
    return DLLM(name=name, net=net, tokenizer=tokenizer, mask_id=mask_id, eos_ids=frozenset(eos), folder=folder,
                family=LLADA2)


def load_masked_lm(name: str, folder: Path, raw: dict[str, Any], device: torch.device, dtype: torch.dtype,
                   trust_remote_code: bool = False) -> DLLM:
    """A checkpoint transformers' AutoModelForMaskedLM loads (from safetensors only), with the
    tokenizer's mask token; no dLLM-Cache (see masked_lm.py)."""
    weight_files(folder)  # the usual message when a shard is missing, before transformers' own
    tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
    check_chat_template(tokenizer, folder)
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is None:
        raise ModelLoadError(f"{folder / 'tokenizer_config.json'}: the tokenizer has no mask token (mask_token); "
                             "a masked diffusion LM needs one")
    try:
        from transformers import AutoModelForMaskedLM
        from transformers.utils import logging as hf_logging

        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            hf = AutoModelForMaskedLM.from_pretrained(str(folder), dtype=dtype, use_safetensors=True,
                                                      trust_remote_code=trust_remote_code)
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
    except Exception as exc:
        raise ModelLoadError(f"{folder / 'config.json'}: transformers could not load it as a masked LM "
                             f"(model_type={raw.get('model_type')!r}): {describe(exc)}") from exc
    for key, tensor in hf.state_dict().items():  # transformers read the weights: NaN or inf is still refused
        if tensor.is_floating_point() and not all_finite(tensor):
            raise ModelLoadError(f"{weights_location(folder)}: tensor {key} holds NaN or infinite values; the "
                                 "checkpoint is corrupt (or from a diverged training run): download or copy it "
                                 "again, or use another")
    net = MaskedLMNet(hf.to(device).eval())
    if not 0 <= int(mask_id) < net.cfg.vocab_size:
        raise ModelLoadError(f"{folder / 'tokenizer_config.json'}: the mask token's id {mask_id} is outside the "
                             f"model's vocabulary (0..{net.cfg.vocab_size - 1})")
    sep = getattr(tokenizer, "sep_token_id", None)
    eos = end_ids(tokenizer, None if getattr(tokenizer, "eos_token_id", None) is not None else sep)
    eos.discard(int(mask_id))
    return DLLM(name=name, net=net, tokenizer=tokenizer, mask_id=int(mask_id), eos_ids=frozenset(eos),
                folder=folder, family=MASKED_LM)
