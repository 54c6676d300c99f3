"""Local folder or hub id -> config + safetensors + tokenizer -> a ready ``DLLM``.

Only safetensors are read (never pickle), and never with remote code: the network is our
own ``Transformer``, so LLaDA checkpoints load from their official files alone.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

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


ALTERNATIVES = (
    "Use a local folder that holds config.json, the *.safetensors weights and the tokenizer "
    "files (--model /path/to/folder), or the shipped model (--model embedded)."
)


def resolve_model_dir(name: str) -> Path:
    """Map ``embedded``, a local folder or a hub id to a local folder, downloading if needed."""
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

        return Path(snapshot_download(name, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # network, auth, missing repo: one clear message
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"could not get model '{name}' from the Hugging Face Hub ({type(exc).__name__}: {reason}). "
            f"{ALTERNATIVES}"
        ) from exc


def read_config(folder: Path) -> ModelConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder} has no config.json. {ALTERNATIVES}")
    raw = json.loads(path.read_text())
    missing = [k for k in ("d_model", "n_heads", "n_layers") if k not in raw]
    if missing:
        raise ModelLoadError(
            f"{path} is not a LLaDA-family config (model_type={raw.get('model_type')!r}, "
            f"missing {', '.join(missing)}); supported: LLaDA-layout checkpoints such as "
            f"{', '.join(KNOWN_MODELS)}"
        )
    try:
        return ModelConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc


def weight_files(folder: Path) -> list[Path]:
    index = folder / INDEX_FILE
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / n for n in names]
    else:
        files = [folder / SINGLE_FILE]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise ModelLoadError(f"{folder} lacks weight files: {', '.join(absent)}. {ALTERNATIVES}")
    return files


def load_weights(folder: Path, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Read every shard straight onto ``device`` in ``dtype``, under our parameter names."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for file in weight_files(folder):
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            for key in f.keys():
                name = key[len(WEIGHT_PREFIX):] if key.startswith(WEIGHT_PREFIX) else key
                state[name] = f.get_tensor(key).to(dtype)
    return state


def build_model(cfg: ModelConfig, state: dict[str, torch.Tensor], where: str) -> Transformer:
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelLoadError(
            f"{where}: weights do not match config.json (missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''})"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(model.state_dict()[name].shape):
            raise ModelLoadError(f"{where}: tensor {name} has shape {tuple(tensor.shape)}, config implies "
                                 f"{tuple(model.state_dict()[name].shape)}")
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


def load_model(
    name: str,
    device: Optional[str | torch.device] = None,
    dtype: Optional[str | torch.dtype] = None,
) -> DLLM:
    """Load ``embedded``, a local LLaDA-layout folder or a hub id; fp32 on CPU, bf16 on CUDA."""
    folder = resolve_model_dir(name)
    cfg = read_config(folder)
    dev = torch.device(device) if device is not None else default_device()
    dt = parse_dtype(dtype, dev)
    net = build_model(cfg, load_weights(folder, dev, dt), str(folder))
    try:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # it warns that config.json's model_type is not its own
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        finally:
            hf_logging.set_verbosity(verbosity)
    except Exception as exc:
        raise ModelLoadError(f"could not load the tokenizer of '{name}' from {folder}: {exc}") from exc
    eos = {cfg.eos_token_id}
    if getattr(tokenizer, "eos_token_id", None) is not None:
        eos.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    eos.update(vocab[t] for t in END_TOKENS if t in vocab)
    eos.discard(cfg.mask_token_id)
    return DLLM(name=name, net=net, tokenizer=tokenizer, mask_id=cfg.mask_token_id,
                eos_ids=frozenset(eos), folder=folder)
