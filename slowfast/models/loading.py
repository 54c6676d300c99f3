"""Local folder or hub id -> config + safetensors + tokenizer -> a ready ``DLLM``.

Only safetensors are read (never pickle), and never with remote code unless the caller asks
(``trust_remote_code``): the network is our own ``Transformer``, so LLaDA checkpoints load
from their official files alone. A folder that cannot load raises ``ModelLoadError`` with one
line naming the file and what is wrong in it, because that line is all a user of the CLI or
the app sees.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .transformer import ModelConfig, Transformer

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
# Hub models the app and the docs name; any other LLaDA-layout id or folder works too.
KNOWN_MODELS = ("GSAI-ML/LLaDA-8B-Instruct", "GSAI-ML/LLaDA-8B-Base", "GSAI-ML/LLaDA-1.5")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
END_TOKENS = ("<|eot_id|>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>")


class ModelLoadError(RuntimeError):
    """A model could not be found, downloaded or read; the message says what to do."""


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


def check_config_values(raw: dict[str, Any], path: Path) -> None:
    """Refuse sizes and ids that would fail later, deep in torch, with no file named."""
    defaults = ModelConfig().to_dict()  # what from_dict fills in for absent fields
    values = {**defaults, **{k: v for k, v in raw.items() if k in defaults}}

    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    for key in POSITIVE_INTS + OPTIONAL_POSITIVE_INTS:
        v = values[key]
        if (v is not None or key in POSITIVE_INTS) and not (whole(v) and v > 0):
            raise ModelLoadError(f"{path}: {key} must be a whole number above 0, not {v!r}")
    for key in POSITIVE_NUMBERS:
        v = values[key]
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
            raise ModelLoadError(f"{path}: {key} must be a number above 0, not {v!r}")
    d, h, kv = values["d_model"], values["n_heads"], values["n_kv_heads"] or values["n_heads"]
    if d % h:
        raise ModelLoadError(f"{path}: n_heads={h} does not divide d_model={d}")
    if (d // h) % 2:
        raise ModelLoadError(f"{path}: the head size d_model / n_heads = {d // h} is odd; RoPE needs an even one")
    if h % kv:
        raise ModelLoadError(f"{path}: n_kv_heads={kv} does not divide n_heads={h}")
    vocab, rows = values["vocab_size"], values["embedding_size"] or values["vocab_size"]
    if rows < vocab:
        raise ModelLoadError(f"{path}: embedding_size={rows} is smaller than vocab_size={vocab}")
    for key in ("mask_token_id", "eos_token_id"):
        v = values[key]
        if not (whole(v) and 0 <= v < vocab):
            raise ModelLoadError(f"{path}: {key}={v!r} is outside the vocabulary (0..{vocab - 1})")


def read_config(folder: Path) -> ModelConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder} has no config.json. {ALTERNATIVES}")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: not a JSON object (it holds a {type(raw).__name__})")
    missing = [k for k in ("d_model", "n_heads", "n_layers") if k not in raw]
    if missing:
        raise ModelLoadError(
            f"{path} is not a LLaDA-family config (model_type={raw.get('model_type')!r}, "
            f"missing {', '.join(missing)}); supported: LLaDA-layout checkpoints such as "
            f"{', '.join(KNOWN_MODELS)}"
        )
    check_config_values(raw, path)
    try:
        return ModelConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc


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


def load_weights(folder: Path, device: torch.device, dtype: torch.dtype,
                 sources: Optional[dict[str, Path]] = None) -> dict[str, torch.Tensor]:
    """Read every shard straight onto ``device`` in ``dtype``, under our parameter names;
    ``sources`` (when given) records each tensor's file, for error messages."""
    from safetensors import SafetensorError, safe_open

    state: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {} if sources is None else sources
    for file in weight_files(folder):
        try:
            with safe_open(str(file), framework="pt", device=str(device)) as f:
                for key in f.keys():
                    name = key[len(WEIGHT_PREFIX):] if key.startswith(WEIGHT_PREFIX) else key
                    if name in origin:
                        raise ModelLoadError(f"{file}: tensor {key} is also in {origin[name].name}")
                    state[name] = f.get_tensor(key).to(dtype)
                    origin[name] = file
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{file}: not a readable safetensors file ({describe(exc)}); "
                                 "it may be truncated or corrupt: download or copy it again") from exc
    return state


def build_model(cfg: ModelConfig, state: dict[str, torch.Tensor], where: str,
                sources: Optional[dict[str, Path]] = None) -> Transformer:
    """Our network with ``state`` as its weights; every tensor must exist with the shape
    config.json implies (``where`` names the weights in messages, ``sources`` each tensor's file)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = [name for name in expected if name not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelLoadError(f"{where}: tensor {WEIGHT_PREFIX}{missing[0]} is missing{more}; config.json "
                             f"implies shape {expected[missing[0]]}")
    sources = sources or {}
    for name, tensor in state.items():
        file = sources.get(name, where)
        if name not in expected:
            raise ModelLoadError(f"{file}: tensor {WEIGHT_PREFIX}{name} is not part of the network config.json "
                                 f"describes (n_layers={cfg.n_layers}, weight_tying={cfg.weight_tying})")
        if tuple(tensor.shape) != expected[name]:
            raise ModelLoadError(f"{file}: tensor {WEIGHT_PREFIX}{name} has shape {tuple(tensor.shape)}, "
                                 f"config.json implies {expected[name]}")
    model.load_state_dict(state, assign=True)
    return model.eval()


def save_checkpoint(model: Transformer, folder: Path | str, max_shard_bytes: Optional[int] = None) -> Path:
    """Write ``config.json`` and safetensors in the official LLaDA layout (sharded with an
    index when ``max_shard_bytes`` is given), e.g. for the embedded model or tests."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LLaDAModelLM"], **model.cfg.to_dict()}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tensors = {WEIGHT_PREFIX + k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
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


@dataclass
class DLLM:
    """A loaded diffusion LM: the network, its tokenizer and the facts the engine needs."""

    name: str
    net: Transformer
    tokenizer: object
    mask_id: int
    eos_ids: frozenset[int]
    shift_logits: bool = False  # Dream-style models read position i's logits at i-1
    folder: Optional[Path] = None
    extra: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.net.transformer["wte"].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.transformer["wte"].weight.dtype

    @property
    def max_length(self) -> int:
        return self.net.cfg.max_sequence_length

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, cache=None, start: int = 0) -> torch.Tensor:
        """Logits of positions ``start..T-1`` of ``tokens``; ``cache`` is a
        ``slowfast.cache.FeatureCache`` or None."""
        if not self.shift_logits:
            return self.net(tokens, cache=cache, logits_from=start)
        # Dream-style: position i reads the logits computed at row i - 1 (row 0 reads itself)
        logits = self.net(tokens, cache=cache, logits_from=max(start - 1, 0))
        return torch.cat([logits[:, :1], logits[:, :-1]], dim=1) if start == 0 else logits[:, :-1]

    def encode_prompt(self, text: str, chat: bool = True) -> list[int]:
        """Token ids of the prompt; the chat template is applied when the tokenizer has one."""
        if chat and self.has_chat_template:
            return self.encode_chat([{"role": "user", "content": text}])
        return list(self.tokenizer(text)["input_ids"])

    def encode_chat(self, messages: Sequence[dict]) -> list[int]:
        """Token ids of a conversation (``[{"role", "content"}, ...]``) ready for the
        assistant's next turn; without a chat template the turns are joined as plain lines."""
        if self.has_chat_template:
            rendered = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                                          tokenize=False)
            return list(self.tokenizer(rendered, add_special_tokens=False)["input_ids"])
        lines = [f"{m['role']}: {m['content']}" for m in messages] + ["assistant:"]
        return list(self.tokenizer("\n".join(lines))["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """One display string per id (the mask shows as the tokenizer's mask token)."""
        return [self.tokenizer.decode([int(i)]) for i in ids]


def load_tokenizer(folder: Path, trust_remote_code: bool = False) -> Any:
    """The folder's tokenizer through transformers, never asking on stdin: with
    ``trust_remote_code`` False transformers loads the declared built-in class or refuses."""
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


def load_model(
    name: str,
    device: Optional[str | torch.device] = None,
    dtype: Optional[str | torch.dtype] = None,
    *,
    trust_remote_code: bool = False,
) -> DLLM:
    """Load ``embedded``, a local LLaDA-layout folder or a hub id; fp32 on CPU, bf16 on CUDA.

    ``trust_remote_code`` lets the folder's own Python build its tokenizer: off by default,
    since a model folder (or a hub repo) is data and must not run code on this machine.
    Bad arguments raise ValueError; anything wrong with the model raises ModelLoadError."""
    folder = resolve_model_dir(name, trust_remote_code=trust_remote_code)
    dev = parse_device(device)
    dt = parse_dtype(dtype, dev)
    try:
        cfg = read_config(folder)
        sources: dict[str, Path] = {}
        state = load_weights(folder, dev, dt, sources)
        net = build_model(cfg, state, str(weights_location(folder)), sources)
        tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
        check_chat_template(tokenizer, folder)
        eos = {cfg.eos_token_id}
        if getattr(tokenizer, "eos_token_id", None) is not None:
            eos.add(int(tokenizer.eos_token_id))
        vocab = tokenizer.get_vocab()
        eos.update(vocab[t] for t in END_TOKENS if t in vocab)
        eos.discard(cfg.mask_token_id)
    except ModelLoadError:
        raise
    except Exception as exc:  # anything unforeseen still reaches the user as one line
        raise ModelLoadError(f"could not load the model in {folder}: {describe(exc)}") from exc
    return DLLM(name=name, net=net, tokenizer=tokenizer, mask_id=cfg.mask_token_id,
                eos_ids=frozenset(eos), folder=folder)
