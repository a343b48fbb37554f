"""Adapters are checked before they touch the shared base.

All variants of a base share one copy of its weights (:mod:`vichat.loading`), so an adapter that does not fit,
or whose config asks PEFT to rewrite the base's weights while it loads, would change what every other variant
of that base answers. Before PEFT sees an adapter folder we read its three small files, loading no weights:

- ``vichat.json`` (written by ``train.lora`` beside the adapter): the base it was trained on must be the
  variant's base, by key or by source. Without it, a hub id recorded in ``adapter_config.json`` must be the
  base's hub id when the base comes from the hub (a same-shape adapter for another model loads silently else).
- ``adapter_config.json``: a LoRA (``peft_type: LORA``) whose initialisation leaves the base alone:
  ``init_lora_weights`` true, false, ``"gaussian"`` or ``"orthogonal"`` (the saved weights replace the init).
  PiSSA, OLoRA, LoftQ, CorDA, MiCA, LoRA-GA, EVA and any method this list does not know are refused: they
  derive the adapter from the base's weights and several subtract it from them. KaSA (truncates the base's
  weights), ``layer_replication`` (duplicates base layers), ``modules_to_save``, trainable tokens and
  ``target_parameters`` (replace or re-parametrise base modules) are refused too. DoRA and rsLoRA load.
- ``adapter_model.safetensors``: its header, whole and consistent with the file's size (a truncated copy is
  caught here), LoRA tensors only, each on a module the base has and with that module's shapes, A and B in
  pairs, on exactly the modules the config targets. PEFT loads with ``strict=False``: a missing or misnamed
  tensor would otherwise load silently as its random init.

What passes can still fail inside PEFT (a rank that disagrees with the config, no memory left);
:meth:`vichat.loading.LoadedBase.add_adapter` then removes every layer the failed load added, so the base and
its sibling adapters stay bit-identical.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from vichat.errors import VariantUnavailableError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_META = "vichat.json"

# init_lora_weights values that only initialise the LoRA matrices; the saved weights then replace them
SAFE_INITS: tuple[object, ...] = (True, False, "gaussian", "orthogonal")
# config keys whose non-empty value makes PEFT change or replace the base's own modules or weights
BASE_ALTERING = {
    "layer_replication": "duplicates layers of the base model",
    "kasa_config": "KaSA truncates the base's weights",
    "modules_to_save": "replaces whole base modules with trained copies",
    "trainable_token_indices": "replaces rows of the base's embedding",
    "target_parameters": "re-parametrises base weights directly",
}
FLOAT_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
PREFIX = "base_model.model."
# tensor name endings PEFT saves for a LoRA (the adapter name already removed), and what each is
PARTS = {
    "lora_A.weight": "A",
    "lora_B.weight": "B",
    "lora_B.bias": "bias",
    "lora_embedding_A": "EA",
    "lora_embedding_B": "EB",
    "lora_magnitude_vector": "M",
    "lora_magnitude_vector.weight": "M",
}
MAX_HEADER = 100 * 2**20


@dataclass(frozen=True)
class AdapterFiles:
    """What the checks read from an adapter folder: its config and its tensors' names, dtypes and shapes."""

    folder: Path
    config: dict
    tensors: dict[str, tuple[str, tuple[int, ...]]]


def refuse(folder: Path, problem: str, fix: str) -> VariantUnavailableError:
    return VariantUnavailableError(f"adapter {folder}: {problem}; {fix}")


def read_json_object(path: Path, folder: Path) -> dict:
    """A small JSON object file, or a clear refusal (UTF-16, bad bytes, bad JSON, not an object)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise refuse(folder, f"cannot read {path.name} ({e.strerror or e})", "check the folder") from None
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(raw) > 1 and b"\x00" in raw[:4]):
        raise refuse(folder, f"{path.name} is UTF-16, not UTF-8", "save it again as UTF-8")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise refuse(folder, f"{path.name} is not UTF-8 (byte {e.start})", "save it again as UTF-8") from None
    except (ValueError, RecursionError) as e:
        raise refuse(
            folder, f"{path.name} is not valid JSON ({e})", "restore it from the trained adapter"
        ) from None
    if not isinstance(data, dict):
        raise refuse(folder, f"{path.name} holds a {type(data).__name__}, not a JSON object", "restore it")
    return data


def safetensors_header(path: Path, folder: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name -> (dtype, shape) from the file's header, after checking the header against the file."""
    broken = "restore the file, or train the adapter again (python -m train.lora)"
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if length <= 1 or length > min(size - 8, MAX_HEADER):
                raise refuse(folder, f"{path.name} is truncated or not a safetensors file", broken)
            raw = f.read(length)
    except OSError as e:
        raise refuse(folder, f"cannot read {path.name} ({e.strerror or e})", "check the folder") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise refuse(folder, f"{path.name} has a damaged header", broken) from None
    if not isinstance(header, dict):
        raise refuse(folder, f"{path.name} has a damaged header", broken)
    header.pop("__metadata__", None)
    if not header:
        raise refuse(folder, f"{path.name} holds no tensors", broken)
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    end = 0
    for name, info in header.items():
        ok = (
            isinstance(info, dict)
            and isinstance(info.get("shape"), list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in info["shape"])
            and isinstance(info.get("data_offsets"), list)
            and len(info["data_offsets"]) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in info["data_offsets"])
        )
        if not ok:
            raise refuse(folder, f"{path.name}: the header entry of {name!r} is damaged", broken)
        dtype = info.get("dtype")
        if dtype not in FLOAT_BYTES:
            raise refuse(
                folder,
                f"{path.name}: tensor {name!r} has dtype {dtype!r}; LoRA weights are F16, BF16, F32 or F64",
                broken,
            )
        start, stop = info["data_offsets"]
        shape = tuple(info["shape"])
        if not 0 <= start <= stop or stop - start != math.prod(shape) * FLOAT_BYTES[dtype]:
            raise refuse(folder, f"{path.name}: the size of tensor {name!r} disagrees with its shape", broken)
        end = max(end, stop)
        tensors[name] = (dtype, shape)
    if 8 + length + end > size:
        raise refuse(
            folder, f"{path.name} is truncated ({size} bytes; its header promises {8 + length + end})", broken
        )
    return tensors


# ------------------------------------------------------------------------------------------ file checks


def _same_place(a: str, b: str) -> bool:
    if a == b:
        return True
    from vichat.paths import resolve

    try:
        return resolve(a).resolve() == resolve(b).resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def _hub_id(ref: object) -> bool:
    return (
        isinstance(ref, str)
        and ref.count("/") == 1
        and not ref.startswith((".", "/", "~"))
        and "\\" not in ref
        and ":" not in ref
    )


def check_base(folder: Path, spec, config: dict) -> None:
    """The adapter was made for ``spec`` (a :class:`vichat.loading.BaseSpec`), as far as its files say."""
    meta_file = folder / ADAPTER_META
    if meta_file.is_file():
        meta = read_json_object(meta_file, folder)
        base, source = meta.get("base"), meta.get("base_source")
        if base is None and source is None:
            return
        fits = (base is not None and (str(base) == spec.key or _same_place(str(base), spec.source))) or (
            source is not None and _same_place(str(source), spec.source)
        )
        if not fits:
            made_for = f"base {base!r}" + (f" (source {source})" if source else "")
            raise refuse(
                folder,
                f"it was trained on {made_for} (its {ADAPTER_META}), not on the variant's base {spec.key!r} "
                f"(source {spec.source})",
                f"set the variant's `base:` to {base or source!r} in the models file, or train the adapter "
                f"on {spec.key!r} (python -m train.lora --base {spec.key})",
            )
        return
    recorded = config.get("base_model_name_or_path")
    if _hub_id(recorded) and _hub_id(spec.source) and recorded.lower() != spec.source.lower():
        raise refuse(
            folder,
            f"its {ADAPTER_CONFIG} says it was made for {recorded}, not for the variant's base {spec.source}",
            f"point the variant at a base with source {recorded}; if it truly fits {spec.source}, write "
            f'{ADAPTER_META} beside it with {{"base": "{spec.key}"}}',
        )


def check_config(folder: Path, config: dict) -> None:
    """A plain LoRA whose loading leaves the base's weights and modules as they are."""
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise refuse(
            folder,
            f"{ADAPTER_CONFIG} has peft_type {peft_type!r}; ViChat loads LoRA adapters only",
            "train a LoRA adapter (python -m train.lora)",
        )
    init = config.get("init_lora_weights", True)
    known = any(
        init is s or (isinstance(s, str) and isinstance(init, str) and init.lower() == s) for s in SAFE_INITS
    )
    if not known:
        raise refuse(
            folder,
            f"{ADAPTER_CONFIG} asks for init_lora_weights={init!r}, which derives the adapter from the base's "
            "weights when it loads and can rewrite the base shared by every variant",
            "convert it to a plain LoRA first (PEFT: save_pretrained(..., "
            "path_initial_model_for_weight_conversion=...)) and set init_lora_weights to true",
        )
    for key, why in BASE_ALTERING.items():
        value = config.get(key)
        if value is not None if key.endswith("_config") else bool(value):  # kasa_config {} turns KaSA on
            raise refuse(
                folder,
                f"{ADAPTER_CONFIG} sets {key} ({why}), which would change the base shared by every variant",
                f"train the adapter without {key}",
            )
    targets = config.get("target_modules")
    listed = isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)
    if not (listed or (isinstance(targets, str) and targets)):
        raise refuse(
            folder, f"{ADAPTER_CONFIG} names no target_modules", "restore it from the trained adapter"
        )


def read_adapter(folder: Path, spec) -> AdapterFiles:
    """Every check that needs only the files (and the base's spec): for ``--list`` and before loading."""
    config = read_json_object(folder / ADAPTER_CONFIG, folder)
    check_config(folder, config)
    check_base(folder, spec, config)
    return AdapterFiles(folder, config, safetensors_header(folder / ADAPTER_WEIGHTS, folder))


# ------------------------------------------------------------------------------------- against the base


def _base_layers(root) -> dict[str, object]:
    """Module name -> module of the base as PEFT sees it (LoRA wrappers replaced by the layer they wrap)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = {n for n, m in root.named_modules() if isinstance(m, BaseTunerLayer)}
    layers = {}
    for name, module in root.named_modules():
        parent, inside = name, False
        while "." in parent:
            parent = parent.rpartition(".")[0]
            if parent in wrapped:
                inside = True
                break
        if inside:
            continue
        layers[name] = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
    return layers


def _kind(module) -> tuple[str, int, int] | None:
    """("linear", in, out), ("embedding", rows, width), or None for a layer LoRA does not apply to here."""
    import torch.nn as nn

    if isinstance(module, nn.Embedding):
        return "embedding", module.num_embeddings, module.embedding_dim
    if isinstance(module, nn.Linear) or (
        isinstance(getattr(module, "in_features", None), int)
        and isinstance(getattr(module, "out_features", None), int)
    ):
        return "linear", module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:  # GPT-2 style
        rows, cols = module.weight.shape
        return "linear", int(rows), int(cols)
    return None


def _targeted(folder: Path, config: dict, layers: dict[str, object], root) -> set[str]:
    from peft.tuners.tuners_utils import check_target_module_exists

    targets = config["target_modules"]
    if isinstance(targets, str) and targets.lower() == "all-linear":
        out_emb = root.get_output_embeddings() if hasattr(root, "get_output_embeddings") else None
        return {n for n, m in layers.items() if n and m is not out_emb and (_kind(m) or ("",))[0] == "linear"}
    view = SimpleNamespace(
        target_modules=targets,
        target_parameters=None,
        exclude_modules=config.get("exclude_modules"),
        modules_to_save=None,
        layers_to_transform=config.get("layers_to_transform"),
        layers_pattern=config.get("layers_pattern"),
    )
    try:
        return {n for n in layers if n and check_target_module_exists(view, n)}
    except Exception as e:  # a bad regex or pattern in the config
        raise refuse(
            folder, f"its target_modules cannot be matched ({e})", f"restore {ADAPTER_CONFIG}"
        ) from None


def check_fits(files: AdapterFiles, model, base_key: str) -> None:
    """Every tensor lands on a module the base has, with its shapes, on exactly the modules the config targets."""
    folder, config = files.folder, files.config
    from vichat.loading import inner_model  # loading imports this module: no top-level import

    root = inner_model(model)
    layers = _base_layers(root)

    def misfit(problem: str, fix: str = "") -> VariantUnavailableError:
        fix = (
            fix
            or f"use the adapter with the base it was trained on, or train it on {base_key!r} (python -m train.lora)"
        )
        return refuse(folder, f"does not fit base {base_key!r}: {problem}", fix)

    found: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, (_, shape) in files.tensors.items():
        part = next((p for p in PARTS if key.endswith("." + p)), None)
        if not key.startswith(PREFIX) or part is None:
            raise misfit(
                f"tensor {key!r} is not a LoRA weight PEFT would load", "restore the adapter's files"
            )
        module = key[len(PREFIX) : -len(part) - 1]
        if module not in layers:
            raise misfit(f"tensor {key!r} is for module {module!r}, which the base lacks")
        found.setdefault(module, {})[part] = shape
    targeted = _targeted(folder, config, layers, root)
    if not targeted:
        raise misfit(f"none of its target_modules ({config['target_modules']}) is a module of the base")
    missing, extra = sorted(targeted - set(found)), sorted(set(found) - targeted)
    if missing:
        raise misfit(
            f"{ADAPTER_WEIGHTS} lacks the LoRA tensors of {len(missing)} targeted module(s), e.g. {missing[0]!r}",
            f"restore {ADAPTER_WEIGHTS} from the trained adapter",
        )
    if extra:
        raise misfit(
            f"it holds tensors for {len(extra)} module(s) its config does not target, e.g. {extra[0]!r}",
            f"restore {ADAPTER_CONFIG} from the trained adapter",
        )
    dora = bool(config.get("use_dora"))
    for module, parts in sorted(found.items()):
        kind = _kind(layers[module])
        if kind is None:
            raise misfit(
                f"it targets {module!r}, a {type(layers[module]).__name__}, not a linear or embedding layer"
            )
        what, n_in, n_out = kind
        a, b = (
            ("lora_A.weight", "lora_B.weight")
            if what == "linear"
            else ("lora_embedding_A", "lora_embedding_B")
        )
        roles = {PARTS[p] for p in parts}
        if a not in parts or b not in parts or roles - {PARTS[a], PARTS[b], "bias", "M"}:
            raise misfit(
                f"module {module!r} ({what}) needs tensors {a} and {b}, found {', '.join(sorted(parts))}",
                f"restore {ADAPTER_WEIGHTS} from the trained adapter",
            )
        shape_a, shape_b = parts[a], parts[b]
        rank = shape_a[0] if len(shape_a) == 2 else -1
        if rank < 1 or shape_a != (rank, n_in) or shape_b != (n_out, rank):
            raise misfit(
                f"its module {module!r} is {n_in} -> {n_out}, but the adapter's tensors there are "
                f"A {list(shape_a)} and B {list(shape_b)}"
            )
        bias = parts.get("lora_B.bias")
        if bias is not None and bias != (n_out,):
            raise misfit(f"the LoRA bias of {module!r} has shape {list(bias)}, not [{n_out}]")
        magnitude = parts.get("lora_magnitude_vector", parts.get("lora_magnitude_vector.weight"))
        if (magnitude is not None) != dora:
            problem = "has no DoRA magnitude" if dora else "holds a DoRA magnitude but use_dora is false"
            raise misfit(f"module {module!r} {problem}", "restore the adapter's files")
        if magnitude is not None and what == "linear" and magnitude != (n_out,):
            raise misfit(f"the DoRA magnitude of {module!r} has shape {list(magnitude)}, not [{n_out}]")
