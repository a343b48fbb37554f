"""Adapters cannot alter the shared base: refused before they touch it, undone when PEFT fails half-way.

Every case runs on tiny random BLOOM and Gemma 3 bases, both as the first adapter of a bare base and beside a
loaded sibling adapter; after each refused or failed load every parameter of the base, its module layout and
the logits of the bare base and of the sibling are compared bit for bit with what they were before.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from testkit.tiny import build_adapter as make_adapter
from vichat.adapter_checks import check_base, read_adapter
from vichat.errors import VariantUnavailableError, ViChatError
from vichat.loading import BaseSpec, LoadedBase, adapter_availability, lora_targets
from vichat.paths import ASSETS, MODELS_YAML
from vichat.registry import Registry

WEIGHTS, CONFIG, META = "adapter_model.safetensors", "adapter_config.json", "vichat.json"


# ------------------------------------------------------------------------------------------ bad adapters


def _config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / CONFIG).read_text())
    cfg.update(changes)
    (folder / CONFIG).write_text(json.dumps(cfg))


def _tensors(folder: Path, change) -> None:
    weights = load_file(folder / WEIGHTS)
    change(weights)
    save_file(weights, folder / WEIGHTS, metadata={"format": "pt"})


def _truncate(folder: Path) -> None:
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) * 2 // 3])


def _widen(w: dict) -> None:
    key = sorted(k for k in w if "lora_A" in k)[0]
    w[key] = torch.randn(w[key].shape[0], w[key].shape[1] + 8)


def _drop_b(w: dict) -> None:
    del w[sorted(k for k in w if "lora_B" in k)[-1]]


def _extra(w: dict) -> None:
    key = sorted(k for k in w if "lora_A" in k)[0]
    w[key.replace("lora_A", "lora_C")] = w[key].clone()


def _rename(w: dict) -> None:
    key = sorted(w)[0]
    w[key.removeprefix("base_model.model.")] = w.pop(key)


def _second_layer_rank_zero(folder: Path) -> None:  # PEFT fails after injecting into the first layer
    cfg = json.loads((folder / CONFIG).read_text())
    target = sorted(cfg["target_modules"])[0]
    _config(
        folder, rank_pattern={f"1.{'self_attention' if 'query_key' in target else 'self_attn'}.{target}": 0}
    )


# name -> (how to spoil a good adapter, part of the message)
BAD = {
    "truncated_weights": (_truncate, "truncated"),
    "wrong_shapes": (lambda f: _tensors(f, _widen), "but the adapter's tensors there are"),
    "missing_tensor": (lambda f: _tensors(f, _drop_b), "needs tensors"),
    "unknown_tensor": (lambda f: _tensors(f, _extra), "not a LoRA weight"),
    "unprefixed_tensor": (lambda f: _tensors(f, _rename), "not a LoRA weight"),
    "pissa": (lambda f: _config(f, init_lora_weights="pissa"), "init_lora_weights='pissa'"),
    "pissa_niter": (lambda f: _config(f, init_lora_weights="pissa_niter_4"), "rewrite the base"),
    "olora": (lambda f: _config(f, init_lora_weights="olora"), "init_lora_weights='olora'"),
    "loftq": (lambda f: _config(f, init_lora_weights="loftq", loftq_config={"loftq_bits": 4}), "loftq"),
    "corda": (lambda f: _config(f, init_lora_weights="corda"), "corda"),
    "eva": (lambda f: _config(f, init_lora_weights="eva"), "eva"),
    "unknown_init": (lambda f: _config(f, init_lora_weights="magic"), "magic"),
    "kasa": (lambda f: _config(f, kasa_config={}), "KaSA"),
    "layer_replication": (lambda f: _config(f, layer_replication=[[0, 2], [0, 2]]), "layer_replication"),
    "modules_to_save": (lambda f: _config(f, modules_to_save=["lm_head"]), "modules_to_save"),
    "not_lora": (lambda f: _config(f, peft_type="IA3"), "LoRA adapters only"),
    "no_targets": (lambda f: _config(f, target_modules=["no_such_proj"]), "none of its target_modules"),
    "config_not_json": (lambda f: (f / CONFIG).write_text("{not json"), "not valid JSON"),
    "config_utf16": (lambda f: (f / CONFIG).write_bytes((f / CONFIG).read_text().encode("utf-16")), "UTF-16"),
    "meta_not_json": (lambda f: (f / META).write_bytes(b"\xff\xfe{"), META),
    "meta_other_base": (
        lambda f: (f / META).write_text(
            json.dumps({"base": "bloomz-7b1-mt", "base_source": "bigscience/bloomz"})
        ),
        "it was trained on base 'bloomz-7b1-mt'",
    ),
    # these pass the checks and fail inside PEFT, after it has started changing the model: undone
    "rank_disagrees": (lambda f: _config(f, r=4), "size mismatch"),
    "rank_zero_midway": (_second_layer_rank_zero, "positive integer"),
    "bad_dropout": (lambda f: _config(f, lora_dropout=5.0), "dropout"),
}


@pytest.fixture(scope="module")
def world(tiny_models, tiny_gemma_builder, tmp_path_factory) -> dict:
    """Per architecture: a base folder, a sibling adapter, and one spoilt copy of another adapter per case."""
    root = tmp_path_factory.mktemp("adapter-safety")
    out = {}
    for arch in ("bloom", "gemma"):
        if arch == "bloom":
            base = tiny_models["bloom"]
        else:
            base = tiny_gemma_builder(root / "gemma", tiny_models["bloom"])
        targets = lora_targets("bloom") if arch == "bloom" else ["q_proj", "v_proj"]
        good = make_adapter(base, root / f"{arch}-good", 2, targets)
        bad = {}
        for name, (spoil, _) in BAD.items():
            folder = root / f"{arch}-{name}"
            shutil.copytree(good, folder)
            spoil(folder)
            bad[name] = folder
        out[arch] = {
            "base": base,
            "sibling": make_adapter(base, root / f"{arch}-sibling", 1, targets),
            "good": good,
            "bad": bad,
        }
    return out


def _registry(tmp_path: Path, w: dict) -> Registry:
    variants = [{"name": "base", "base": "b"}, {"name": "sib", "base": "b", "adapter": str(w["sibling"])}]
    variants += [{"name": n, "base": "b", "adapter": str(f)} for n, f in w["bad"].items()]
    data = {"bases": {"b": {"source": str(w["base"])}}, "variants": variants}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return Registry.from_yaml(path, device="cpu", progress=lambda m: None)


def fingerprint(base: LoadedBase, adapters: list[str]) -> dict:
    """Every base parameter's bytes, the module layout, and the logits of the bare base and each adapter."""
    model = base.model.get_base_model() if base.is_peft else base.model
    params = {}
    for name, p in model.named_parameters():
        if "lora_" not in name:
            params[name.replace(".base_layer", "")] = hashlib.sha256(p.detach().numpy().tobytes()).hexdigest()
    layout = [(n, type(m).__name__) for n, m in base.model.named_modules()]
    ids = torch.tensor([[5, 17, 42, 9, 33, 61, 7, 12]])
    logits = {}
    for adapter in [None, *adapters]:
        with base.use(adapter) as m, torch.no_grad():
            logits[adapter] = m(input_ids=ids).logits.clone()
    return {"params": params, "layout": layout, "logits": logits, "adapters": dict(base.adapters)}


def assert_same(before: dict, after: dict) -> None:
    assert after["params"] == before["params"], "base parameters changed"
    assert after["layout"] == before["layout"], "modules were added to or removed from the base"
    assert after["adapters"] == before["adapters"]
    for adapter, logits in before["logits"].items():
        assert torch.equal(after["logits"][adapter], logits), (
            f"output of {adapter or 'the bare base'} changed"
        )


@pytest.mark.parametrize("arch", ["bloom", "gemma"])
@pytest.mark.parametrize("with_sibling", [False, True], ids=["first-adapter", "beside-a-sibling"])
def test_refused_or_failed_adapters_leave_the_base_bit_identical(world, tmp_path, arch, with_sibling):
    w = world[arch]
    reg = _registry(tmp_path, w)
    siblings = ["sib"] if with_sibling else []
    base = reg.loaded_base("b")
    for name in siblings:
        reg.prepare(name)
    before = fingerprint(base, siblings)
    for name, (_, message) in BAD.items():
        with pytest.raises(ViChatError) as e:
            reg.prepare(name)
        text = str(e.value)
        assert str(w["bad"][name]) in text and message.lower() in text.lower(), (name, text)
        assert "Traceback" not in text
        assert_same(before, fingerprint(base, siblings))
        # the checks run again at load time, even when the registry's file check is skipped
        with pytest.raises(ViChatError):
            base.add_adapter(name, w["bad"][name])
        assert_same(before, fingerprint(base, siblings))
    assert not (base.is_peft and not siblings)
    # and a good adapter still loads afterwards, beside the sibling, changing only its own output
    base.add_adapter("good", w["good"])
    after = fingerprint(base, siblings)
    assert after["params"] == before["params"]
    for adapter, logits in before["logits"].items():
        assert torch.equal(after["logits"][adapter], logits)


def test_refusals_show_in_the_variant_list_before_any_model_loads(world, tmp_path):
    reg = _registry(tmp_path, world["bloom"])
    assert reg.availability("sib").ok
    for name in ("pissa", "truncated_weights", "meta_other_base", "config_utf16"):
        check = reg.availability(name)
        assert not check.ok and str(world["bloom"]["bad"][name]) in check.reason
    assert not reg.loaded()  # nothing was loaded to say so


def test_same_shape_adapter_for_another_hub_base_is_refused(tmp_path, world):
    folder = tmp_path / "a"
    shutil.copytree(world["bloom"]["good"], folder)
    _config(folder, base_model_name_or_path="bigscience/bloom-7b1")
    spec = BaseSpec("bloomz-7b1-mt", "bigscience/bloomz-7b1-mt")
    config = json.loads((folder / CONFIG).read_text())
    with pytest.raises(VariantUnavailableError, match="made for bigscience/bloom-7b1") as e:
        check_base(folder, spec, config)
    assert META in str(e.value)  # the way out when it truly fits
    check_base(folder, BaseSpec("x", "bigscience/bloom-7b1"), config)
    (folder / META).write_text(json.dumps({"base": "bloomz-7b1-mt"}))  # our own record wins
    check_base(folder, spec, config)


def test_meta_matches_by_key_or_by_source(tmp_path, world):
    folder = tmp_path / "a"
    shutil.copytree(world["bloom"]["good"], folder)
    config = json.loads((folder / CONFIG).read_text())
    (folder / META).write_text(json.dumps({"base": str(world["bloom"]["base"]), "base_source": "elsewhere"}))
    check_base(folder, BaseSpec("b", str(world["bloom"]["base"])), config)  # trained with --base FOLDER
    (folder / META).write_text(json.dumps({"base": "gemma-270m", "base_source": "gguf-package:x"}))
    check_base(folder, BaseSpec("gemma-270m", "somewhere/else"), config)
    check_base(folder, BaseSpec("renamed", "gguf-package:x"), config)
    with pytest.raises(VariantUnavailableError, match="not on the variant's base 'other'"):
        check_base(folder, BaseSpec("other", "gguf-package:y"), config)


def test_shipped_adapters_pass_the_checks():
    reg = Registry.from_yaml(MODELS_YAML)
    spec = reg.bases["gemma-270m"]
    for name in ("gemma-chat", "gemma-doctor"):
        files = read_adapter(ASSETS / "adapters" / name, spec)
        assert any("lora_A" in k for k in files.tensors)
        assert adapter_availability(str(ASSETS / "adapters" / name), spec).ok
