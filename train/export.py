"""Take an adapter out of the project: merged weights, a GGUF LoRA for llama.cpp / Ollama, a push to the hub.

``python -m train.export ADAPTER_DIR --merge OUT_DIR`` writes the base with the adapter folded in as one plain
transformers model (safetensors, config, tokenizer, generation config), for servers that cannot apply a LoRA
to the architecture (vLLM and TGI serve BLOOM and GPT-J only that way). The base is found the way the app finds
it (the adapter's ``vichat.json`` names a base of ``assets/models.yaml``; the bundled Gemma GGUF is the
safetensors copy in the cache), loaded in float32 on the CPU, the adapter applied by PEFT after the project's
adapter checks, ``merge_and_unload()``, saved (in the base's own dtype unless ``--dtype`` says otherwise) into a
temp folder beside OUT_DIR and renamed, so OUT_DIR is whole or absent. An OUT_DIR that holds files is refused
unless ``--force``; nothing is ever written into the adapter's folder or the base's.

``--gguf OUT.gguf`` writes the adapter as a GGUF LoRA (``gguf`` package) for llama.cpp's ``--lora`` and an
Ollama ``ADAPTER`` line. What llama.cpp reads (its ``convert_lora_to_gguf.py`` and ``llama-adapter.cpp``):

- metadata ``general.type = "adapter"``, ``adapter.type = "lora"``, ``adapter.lora.alpha`` (float32) and
  ``general.architecture``, which must be the base GGUF's (``gemma3`` for the embedded Gemma 3);
- per target module two tensors named after the base GGUF's weight, ``blk.{i}.attn_q.weight.lora_a`` and
  ``.lora_b`` (q/k/v/o_proj -> attn_q/k/v/output, gate/up/down_proj -> ffn_gate/up/down; BLOOM's
  query_key_value -> attn_qkv);
- orientation: PEFT's matrices as they are, in numpy (row-major) order ``lora_a: [rank, in]`` and
  ``lora_b: [out, rank]``. GGUF stores dimensions reversed (ggml's ``ne``), so llama.cpp sees
  ``a->ne = [in, rank]`` and ``b->ne = [rank, out]`` and checks ``a->ne[0] == W->ne[0]`` (in),
  ``b->ne[1] == W->ne[1]`` (out) and ``a->ne[1] == b->ne[0]`` (rank);
- scale: llama.cpp applies ``alpha / rank`` with the rank read from ``b->ne[0]``. PEFT's scale is
  ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA, per-module ``alpha_pattern``), so one alpha is stored and any
  module whose PEFT scale differs from ``alpha / its rank`` has the ratio folded into its B matrix;
- where llama.cpp's converter reorders a base weight's rows (BLOOM's fused QKV: per-head [q, k, v] to
  [all q, all k, all v]; Llama's q/k rotary permutation), the same reordering is applied to B's rows.

For a base that is a bundled GGUF (or with ``--base-gguf FILE``) the written file is checked against the base
GGUF by llama.cpp's own loader rules (architecture, every tensor present, shapes) before it is kept.

``--push REPO`` uploads the merged folder when ``--merge`` is given, else the adapter folder (and the GGUF
file when written), with ``huggingface_hub``. Offline, without a token or when the hub refuses, it stops with
one line (exit 2); the token is never printed.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vichat import checks
from vichat.adapter_checks import ADAPTER_CONFIG, ADAPTER_META, ADAPTER_WEIGHTS
from vichat.cli import run
from vichat.errors import SettingsError, ViChatError
from vichat.files import atomic_write_json
from vichat.loading import GGUF_PREFIX, BaseSpec, adapter_folder, converted_gguf, load_base, read_json_object
from vichat.paths import MODELS_YAML, resolve

# transformers model_type -> llama.cpp architecture name (general.architecture)
GGUF_ARCH = {
    "gemma3_text": "gemma3",
    "gemma3": "gemma3",
    "gemma2": "gemma2",
    "gemma": "gemma",
    "llama": "llama",
    "bloom": "bloom",
    "gptj": "gptj",
}
# HF module name (last part of the path) -> llama.cpp tensor name inside blk.{i}
GGUF_MODULE = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
    "query_key_value": "attn_qkv",  # BLOOM
    "dense": "attn_output",  # BLOOM self_attention.dense
    "dense_h_to_4h": "ffn_up",  # BLOOM
    "dense_4h_to_h": "ffn_down",  # BLOOM
    "out_proj": "attn_output",  # GPT-J
    "fc_in": "ffn_up",  # GPT-J
    "fc_out": "ffn_down",  # GPT-J
}
LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")
BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(?P<block>\d+)\.(?:.*\.)?(?P<leaf>[A-Za-z0-9_]+)$")
DTYPES = ("auto", "float32", "bfloat16", "float16")
OUTTYPES = ("f32", "f16")
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
PUSH_IGNORE = [".*", "**/.*", "*.tmp", "checkpoint-*", "checkpoint-*/**"]
MERGED_META = "vichat_merged.json"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ the base


def find_base(adapter: Path, base: str | None, models_file: Path) -> BaseSpec:
    """The base this adapter was trained on: ``--base``, else its vichat.json, else its adapter_config.json.

    A key of the models file gives that base's source; anything else is taken as a source (hub id or folder).
    The base always loads in full precision here: merging into int8 weights would lose the adapter.
    """
    from vichat.registry import Registry

    bases = Registry.from_yaml(models_file).bases
    key = source = None
    if base:
        key = source = base
    else:
        meta_file = adapter / ADAPTER_META
        meta = read_json_object(meta_file, adapter) if meta_file.is_file() else {}
        key, source = meta.get("base"), meta.get("base_source")
        if key is None and source is None:
            config = read_json_object(adapter / ADAPTER_CONFIG, adapter)
            key = source = config.get("base_model_name_or_path")
    if isinstance(key, str) and key in bases:
        spec = bases[key]
        return BaseSpec(spec.key, spec.source, False, spec.description)
    if isinstance(source, str) and source.strip():
        return BaseSpec(str(key or source), source, False)
    raise ViChatError(
        f"cannot tell which base adapter {adapter} was trained on (no vichat.json and no "
        f"base_model_name_or_path in its {ADAPTER_CONFIG}); pass --base with a key of {models_file} or a source"
    )


def base_location(spec: BaseSpec) -> Path | str:
    """Where transformers reads the base from: the converted cache folder, a local folder or a hub id."""
    if spec.kind == "gguf-package":
        folder, _ = converted_gguf(spec.source[len(GGUF_PREFIX) :], progress=say)
        return folder
    return resolve(spec.source) if spec.kind == "local" else spec.source


def base_config(spec: BaseSpec) -> dict:
    """The base's config.json as a dict (hub bases must be in the local cache or reachable)."""
    from transformers import AutoConfig

    where = base_location(spec)
    try:
        return AutoConfig.from_pretrained(where).to_dict()
    except (OSError, ValueError) as e:
        raise ViChatError(
            f"cannot read the config of base {spec.key!r} from {where} ({type(e).__name__}); run once online, or "
            "pass --base with a local folder holding the model"
        ) from None


def bundled_gguf(spec: BaseSpec) -> Path | None:
    """The base's own GGUF file when the base is a bundled GGUF package (else None)."""
    if spec.kind != "gguf-package":
        return None
    return Path(importlib.import_module(spec.source[len(GGUF_PREFIX) :]).assemble())


# ---------------------------------------------------------------------------------------------- outputs


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def refuse_output(out: Path, flag: str, protected: dict[str, Path], force: bool, *, folder: bool) -> None:
    """Stop before writing ``out`` over or into the adapter or the base, or over files without --force."""
    for what, place in protected.items():
        if _inside(out, place) or (folder and _inside(place, out)):
            raise ViChatError(
                f"{flag} {out} is {what} {place} or overlaps it; export writes only to a new place: pick "
                "another path"
            )
    if folder:
        if out.exists() and not out.is_dir():
            raise ViChatError(f"{flag} {out} is a file, not a folder: pick a folder path")
        if out.is_dir() and any(out.iterdir()) and not force:
            raise ViChatError(
                f"{flag} {out} exists and is not empty: pick a new folder, or add --force to replace it"
            )
    else:
        if out.is_dir():
            raise ViChatError(f"{flag} {out} is a folder: give a file name such as {out / 'adapter.gguf'}")
        if out.exists() and not force:
            raise ViChatError(f"{flag} {out} exists: pick a new file name, or add --force to replace it")


def _replace_folder(tmp: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- merge


def target_dtype(choice: str, config: dict):
    import torch

    if choice == "auto":
        choice = str(config.get("dtype") or config.get("torch_dtype") or "float32").replace("torch.", "")
        if choice not in DTYPES:
            choice = "float32"
    return getattr(torch, choice)


def merge(adapter: Path, spec: BaseSpec, out: Path, *, dtype: str = "auto") -> Path:
    """Base + adapter as one model in ``out`` (whole or absent). Returns ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    base = load_base(spec, "cpu", progress=say)  # float32 on the CPU, never int8
    base.add_adapter("export", adapter)  # the project's adapter checks run before PEFT touches the base
    merged = base.model.merge_and_unload()
    config = merged.config.to_dict()
    to = target_dtype(dtype, config)
    merged = merged.to(to)
    merged.config.dtype = to
    if any("lora_" in name for name, _ in merged.named_parameters()):  # merge_and_unload left a LoRA layer
        raise ViChatError(f"adapter {adapter} could not be merged into {spec.key!r}: LoRA layers remain")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        base.tokenizer.save_pretrained(tmp)
        if (
            getattr(merged, "generation_config", None) is not None
            and not (tmp / "generation_config.json").exists()
        ):
            merged.generation_config.save_pretrained(tmp)
        meta_file = adapter / ADAPTER_META
        meta = read_json_object(meta_file, adapter) if meta_file.is_file() else {}
        atomic_write_json(
            tmp / MERGED_META,
            {
                "merged_from": {"adapter": str(adapter), "base": spec.key, "base_source": spec.source},
                "template": meta.get("template"),
                "variant": meta.get("variant"),
                "dtype": str(to).replace("torch.", ""),
            },
        )
        if not any(tmp.glob("*.safetensors")):
            raise ViChatError(f"the merged model was not written as safetensors in {tmp}")
        _replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# -------------------------------------------------------------------------------------------------- GGUF


@dataclass(frozen=True)
class LoraPair:
    module: str  # HF module path, e.g. model.layers.0.self_attn.q_proj
    name: str  # llama.cpp base tensor name, e.g. blk.0.attn_q.weight
    a: object  # numpy [rank, in]
    b: object  # numpy [out, rank]


def gguf_tensor_name(module: str) -> str:
    match = BLOCK.search(module)
    if not match or match["leaf"] not in GGUF_MODULE:
        raise ViChatError(
            f"LoRA module {module!r} has no llama.cpp tensor name (known: {', '.join(sorted(GGUF_MODULE))} "
            "inside numbered layers); export --merge instead and convert the merged model with llama.cpp"
        )
    return f"blk.{int(match['block'])}.{GGUF_MODULE[match['leaf']]}.weight"


def _pattern_value(patterns: dict, module: str, default):
    for pattern, value in (patterns or {}).items():
        if re.fullmatch(rf"(.*\.)?{pattern}", module):
            return value
    return default


def _reorder_rows(b, leaf: str, arch: str, config: dict):
    """B's rows reordered as llama.cpp's converter reorders the base weight's rows (see the module docstring)."""
    if arch == "bloom" and leaf == "query_key_value":
        heads = config.get("n_head") or config["num_attention_heads"]
        out, rank = b.shape
        return b.reshape(heads, 3, out // heads // 3, rank).transpose(1, 0, 2, 3).reshape(out, rank)
    if arch == "llama" and leaf in ("q_proj", "k_proj"):
        heads = config["num_attention_heads"]
        if leaf == "k_proj":
            heads = config.get("num_key_value_heads") or heads
        out, rank = b.shape
        return b.reshape(heads, 2, out // heads // 2, rank).swapaxes(1, 2).reshape(out, rank)
    return b


def gguf_pairs(adapter: Path, config: dict) -> tuple[str, float, list[LoraPair]]:
    """(architecture, alpha to store, the LoRA pairs in llama.cpp's names, orientation and scale)."""
    import numpy as np
    from safetensors.numpy import load_file

    lora = read_json_object(adapter / ADAPTER_CONFIG, adapter)
    model_type = config.get("model_type")
    arch = GGUF_ARCH.get(model_type)
    if arch is None:
        raise ViChatError(
            f"llama.cpp architecture of {model_type!r} is not known here (known: {', '.join(GGUF_ARCH)}); "
            "export --merge and convert the merged model with llama.cpp's convert_hf_to_gguf.py"
        )
    for key, why in (
        ("use_dora", "DoRA magnitudes"),
        ("lora_bias", "LoRA biases"),
        ("fan_in_fan_out", "Conv1D"),
    ):
        if lora.get(key):
            raise ViChatError(
                f"adapter {adapter}: llama.cpp's LoRA has no {why} ({key}); export --merge instead"
            )
    rank = lora.get("r")
    alpha = lora.get("lora_alpha")
    rank = checks.positive_int(f"{adapter / ADAPTER_CONFIG}: r", rank)
    alpha = checks.positive(f"{adapter / ADAPTER_CONFIG}: lora_alpha", alpha)
    rslora = bool(lora.get("use_rslora"))

    def peft_scale(a_: float, r_: int) -> float:
        return a_ / (math.sqrt(r_) if rslora else r_)

    stored_alpha = peft_scale(alpha, rank) * rank  # = lora_alpha unless rsLoRA
    tensors = load_file(str(adapter / ADAPTER_WEIGHTS))
    halves: dict[str, dict[str, object]] = {}
    for key, value in tensors.items():
        match = LORA_KEY.match(key)
        if not match:
            raise ViChatError(
                f"adapter {adapter}: tensor {key!r} is not a LoRA A/B matrix; llama.cpp's --lora cannot carry "
                "it: export --merge instead"
            )
        halves.setdefault(match["module"], {})[match["part"]] = value
    pairs = []
    for module in sorted(halves, key=_natural):
        parts = halves[module]
        if set(parts) != {"A", "B"}:
            raise ViChatError(f"adapter {adapter}: module {module} has lora_A without lora_B or the reverse")
        a = np.ascontiguousarray(parts["A"], dtype=np.float32)
        b = np.ascontiguousarray(parts["B"], dtype=np.float32)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ViChatError(
                f"adapter {adapter}: {module} has lora_A {list(a.shape)} and lora_B {list(b.shape)}; expected "
                "[rank, in] and [out, rank]"
            )
        r_m = a.shape[0]
        alpha_m = float(_pattern_value(lora.get("alpha_pattern"), module, alpha))
        factor = peft_scale(alpha_m, r_m) * r_m / stored_alpha  # what llama.cpp's alpha / rank misses
        if factor != 1.0:
            b = (b * np.float32(factor)).astype(np.float32)
        leaf = module.rsplit(".", 1)[-1]
        b = np.ascontiguousarray(_reorder_rows(b, leaf, arch, config))
        pairs.append(LoraPair(module, gguf_tensor_name(module), a, b))
    if not pairs:
        raise ViChatError(f"adapter {adapter} holds no LoRA tensors")
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        raise ViChatError(
            f"adapter {adapter}: two modules map to the same llama.cpp tensor; export --merge instead"
        )
    return arch, float(stored_alpha), pairs


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def write_gguf(
    adapter: Path, spec: BaseSpec, out: Path, *, outtype: str = "f32", base_gguf: Path | None = None
) -> Path:
    """The adapter as a GGUF LoRA in ``out`` (whole or absent); checked against the base GGUF when there is one."""
    import gguf
    import numpy as np

    config = base_config(spec)
    arch, alpha, pairs = gguf_pairs(adapter, config)
    if arch == "gptj":
        say(
            "note: llama.cpp names the gptj architecture but its releases do not run GPT-J models; for GPT-J "
            "serve merged weights (--merge) with vLLM or TGI"
        )
    dtype = np.float16 if outtype == "f16" else np.float32
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        meta_file = adapter / ADAPTER_META
        meta = read_json_object(meta_file, adapter) if meta_file.is_file() else {}
        writer.add_name(str(meta.get("variant") or adapter.name))
        for pair in pairs:
            writer.add_tensor(pair.name + ".lora_a", pair.a.astype(dtype))
            writer.add_tensor(pair.name + ".lora_b", pair.b.astype(dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        base_gguf = base_gguf or bundled_gguf(spec)
        if base_gguf is not None:
            count = check_against_base(tmp, base_gguf)
            say(f"checked against {base_gguf.name}: architecture {arch}, {count} LoRA pairs fit its tensors")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _string_field(reader, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def check_against_base(lora_gguf: Path, base_gguf: Path) -> int:
    """llama.cpp's checks when it loads ``--lora`` onto a base GGUF; returns the number of pairs.

    Metadata (general.type adapter, adapter.type lora, same general.architecture), every lora_a/lora_b in
    pairs, each pair's base tensor present, and ne (GGUF's reversed dimensions): a.ne[0] == W.ne[0],
    b.ne[1] == W.ne[1], a.ne[1] == b.ne[0].
    """
    import gguf

    lora = gguf.GGUFReader(lora_gguf)
    base = gguf.GGUFReader(base_gguf)
    problems = []
    if _string_field(lora, "general.type") != "adapter" or _string_field(lora, "adapter.type") != "lora":
        problems.append("general.type / adapter.type are not adapter / lora")
    arch, base_arch = _string_field(lora, "general.architecture"), _string_field(base, "general.architecture")
    if arch != base_arch:
        problems.append(f"architecture {arch!r} is not the base's {base_arch!r}")
    base_ne = {t.name: [int(d) for d in t.shape] for t in base.tensors}
    found: dict[str, dict[str, list[int]]] = {}
    for t in lora.tensors:
        stem, _, part = t.name.rpartition(".")
        if part not in ("lora_a", "lora_b"):
            problems.append(f"tensor {t.name} is neither lora_a nor lora_b")
            continue
        found.setdefault(stem, {})[part] = [int(d) for d in t.shape]
    for stem, parts in found.items():
        if set(parts) != {"lora_a", "lora_b"}:
            problems.append(f"{stem}: one of lora_a / lora_b is missing")
            continue
        w = base_ne.get(stem)
        if w is None:
            problems.append(f"{stem} is not a tensor of the base GGUF")
            continue
        a, b = parts["lora_a"], parts["lora_b"]
        if a[0] != w[0] or b[1] != w[1] or a[1] != b[0]:
            problems.append(f"{stem}: lora_a ne {a}, lora_b ne {b} do not fit the base's ne {w}")
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise ViChatError(
            f"the GGUF LoRA would not load onto {base_gguf.name} in llama.cpp: {shown}; check that the adapter "
            "was trained on this base (--base)"
        )
    return len(found)


# -------------------------------------------------------------------------------------------------- push


def _offline() -> bool:
    import huggingface_hub.constants as hub

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return flag or bool(hub.HF_HUB_OFFLINE)


def _redact(text: str, token: str) -> str:
    text = " ".join(str(text).split())
    return (text.replace(token, "***") if token else text)[:400]  # redact first: a cut may split the token


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client errors huggingface_hub may raise (it has moved from requests to httpx to httpx2)."""
    found = []
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def push(folder: Path, repo: str, *, extra: list[Path] = (), private: bool = False) -> str:
    """Upload ``folder`` (and ``extra`` files beside it in the repo) to the hub model repo ``repo``."""
    if not REPO_ID.fullmatch(repo) or ".." in repo:
        raise ViChatError(
            f"--push {repo!r} is not a hub repo id: give it as owner/name (e.g. me/vichat-gemma-chat)"
        )
    if _offline():
        raise ViChatError(
            "--push: the Hugging Face hub is in offline mode (HF_HUB_OFFLINE is set); unset it and run again "
            "online. The exported files are kept"
        )
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        token = get_token() or ""
    except (OSError, ValueError, HfHubHTTPError) as e:
        raise ViChatError(
            f"--push: cannot read the Hugging Face token ({type(e).__name__}); log in again"
        ) from None
    if not token:
        raise ViChatError(
            "--push needs a Hugging Face token with write access: run `hf auth login`, or set HF_TOKEN, "
            "then run again"
        )
    endpoint = os.environ.get("HF_ENDPOINT") or None
    api = HfApi(endpoint=endpoint, token=token)
    where = endpoint or "https://huggingface.co"
    try:
        url = api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=folder,
            repo_id=repo,
            repo_type="model",
            ignore_patterns=PUSH_IGNORE,
            commit_message=f"Upload {folder.name} with python -m train.export",
        )
        for path in extra:
            api.upload_file(
                path_or_fileobj=str(path), path_in_repo=path.name, repo_id=repo, repo_type="model"
            )
    except OfflineModeIsEnabled:
        raise ViChatError("--push: the Hugging Face hub is in offline mode; unset HF_HUB_OFFLINE") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        hint = {
            401: "the token was refused: log in again (hf auth login) with a token that can write",
            403: f"the token may not write to {repo}: use a write token, or a repo under your own name",
        }.get(status, "try again later, or check the repo name")
        raise ViChatError(f"--push to {repo} failed (HTTP {status}): {_redact(e, token)}; {hint}") from None
    except (*_transport_errors(), OSError) as e:
        raise ViChatError(
            f"--push: cannot reach the Hugging Face hub at {where} ({type(e).__name__}: {_redact(e, token)}); "
            "check the network and run again. The exported files are kept"
        ) from None
    return str(url)


# --------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.export",
        description="Export a LoRA adapter: merged safetensors (--merge), a GGUF LoRA (--gguf), a hub upload (--push).",
    )
    p.add_argument(
        "adapter", help="adapter folder (adapter_model.safetensors + adapter_config.json) or hub id"
    )
    p.add_argument(
        "--merge", metavar="OUT_DIR", type=Path, help="write base + adapter merged into this new folder"
    )
    p.add_argument(
        "--gguf", metavar="OUT.gguf", type=Path, help="write the adapter as a GGUF LoRA for llama.cpp"
    )
    p.add_argument(
        "--push", metavar="REPO", help="upload the merged folder (with --merge) or the adapter folder"
    )
    p.add_argument(
        "--base", help="base key of the models file, hub id or folder (default: the adapter's vichat.json)"
    )
    p.add_argument("--models", type=Path, default=MODELS_YAML, help=f"variant file (default {MODELS_YAML})")
    p.add_argument(
        "--dtype", choices=DTYPES, default="auto", help="dtype of merged weights (auto: the base's)"
    )
    p.add_argument("--outtype", choices=OUTTYPES, default="f32", help="dtype of the GGUF LoRA tensors")
    p.add_argument(
        "--base-gguf", type=Path, help="check the GGUF LoRA against this base GGUF (bundled: automatic)"
    )
    p.add_argument("--private", action="store_true", help="create the hub repo as private")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty OUT_DIR / OUT.gguf")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.merge or args.gguf or args.push):
        raise SettingsError("nothing to do: give --merge OUT_DIR, --gguf OUT.gguf and/or --push REPO")
    if args.base_gguf is not None and not args.base_gguf.is_file():
        raise ViChatError(f"--base-gguf {args.base_gguf} is not a file")
    here = Path(args.adapter).expanduser()
    adapter = adapter_folder(str(here.resolve()) if here.is_dir() else args.adapter)
    spec = find_base(adapter, args.base, args.models)
    protected = {"the adapter folder": adapter}
    if spec.kind == "local":
        protected["the base folder"] = resolve(spec.source)
    if args.merge:
        refuse_output(args.merge, "--merge", protected, args.force, folder=True)
    if args.gguf:
        refuse_output(args.gguf, "--gguf", protected, args.force, folder=False)
    if args.push and not (REPO_ID.fullmatch(args.push) and ".." not in args.push):
        raise ViChatError(f"--push {args.push!r} is not a hub repo id: give it as owner/name")
    if args.merge:
        say(f"merging {adapter} into base {spec.key!r} ({spec.source})")
        print(f"merged model: {merge(adapter, spec, args.merge, dtype=args.dtype)}")
    if args.gguf:
        print(
            f"GGUF LoRA: {write_gguf(adapter, spec, args.gguf, outtype=args.outtype, base_gguf=args.base_gguf)}"
        )
    if args.push:
        folder = args.merge or adapter
        extra = [args.gguf] if args.gguf else []
        print(f"pushed {folder} to {push(folder, args.push, extra=extra, private=args.private)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
