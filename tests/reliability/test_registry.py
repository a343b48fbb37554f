"""Bad variant files, bad chat flags and corrupt adapters: a message, exit status 2, no traceback, no file changed.

Variant files go through ``python -m vichat.chat --list --models FILE`` (the runner in process); corrupt adapters
through the CLI and through the Registry API, which must leave the shared base and its sibling bit-identical.
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

from tests.reliability.conftest import assert_clean_failure, invoke
from tests.reliability.corpus import BAD_NUMBERS
from vichat import checks
from vichat.errors import ViChatError
from vichat.generation import RANGES
from vichat.registry import Registry

GOOD_BASE = "bases:\n  b: {source: nobody/model}\n"
ENDPOINT = "backend: openai, endpoint: {{base_url: 'http://127.0.0.1:8000/v1', model: m, {extra}}}"


def remote(extra: str) -> bytes:
    return (GOOD_BASE + "variants:\n  - {name: r, base: b, " + ENDPOINT.format(extra=extra) + "}\n").encode()


def variant(fields: str) -> bytes:
    return (GOOD_BASE + "variants:\n  - {" + fields + "}\n").encode()


# name -> (file bytes, what the message says)
BAD_FILES: dict[str, tuple[bytes, str]] = {
    # wrong shapes
    "top_level_list": (b"- name: v\n  base: b\n", "must be a mapping with keys"),
    "top_level_text": (b"just some text\n", "must be a mapping with keys"),
    "variants_mapping": (GOOD_BASE.encode() + b"variants: {name: v, base: b}\n", "variants must be a list"),
    "variants_empty": (GOOD_BASE.encode() + b"variants: []\n", "an empty list"),
    "variant_is_text": (
        GOOD_BASE.encode() + b"variants: [Gemma-Chat]\n",
        "is text ('Gemma-Chat'), not a mapping",
    ),
    "variant_is_list": (GOOD_BASE.encode() + b"variants: [[a, b]]\n", "not a mapping"),
    "bases_list": (b"bases: [a, b]\nvariants: [{name: v, base: a}]\n", "bases must be a mapping"),
    "base_is_text": (
        b"bases: {b: nobody/model}\nvariants: [{name: v, base: b}]\n",
        "base 'b' must be a mapping",
    ),
    "no_variants_key": (GOOD_BASE.encode(), "expected keys 'bases' and 'variants'"),
    "missing_name": (variant("base: b"), "name must be non-empty text (got nothing)"),
    "missing_base": (variant("name: v"), "base must be non-empty text"),
    "missing_source": (b"bases: {b: {description: d}}\nvariants: [{name: v, base: b}]\n", "source must be"),
    "integer_name": (variant("name: 5, base: b"), "name must be non-empty text (got a number 5)"),
    "float_name": (variant("name: 1.5, base: b"), "quote it"),
    "integer_base_key": (
        b"bases: {5: {source: x/y}}\nvariants: [{name: v, base: b}]\n",
        "base key 5 must be text",
    ),
    "list_adapter": (variant("name: v, base: b, adapter: [a, b]"), "adapter must be non-empty text"),
    "template_list": (variant("name: v, base: b, template: [chat]"), "unknown template"),
    "load_in_8bit_text": (
        b"bases: {b: {source: x/y, load_in_8bit: 'yes please'}}\nvariants: [{name: v, base: b}]\n",
        "load_in_8bit must be true or false",
    ),
    "duplicate_names": (
        GOOD_BASE.encode() + b"variants: [{name: v, base: b}, {name: v, base: b}]\n",
        "duplicate",
    ),
    # unknown things
    "unknown_top_key": (
        GOOD_BASE.encode() + b"variants: [{name: v, base: b}]\njudges: []\n",
        "unknown keys: judges",
    ),
    "unknown_variant_key": (variant("name: v, base: b, colour: red"), "unknown keys: colour"),
    "unknown_base_key": (
        b"bases: {b: {source: x/y, gpu: 1}}\nvariants: [{name: v, base: b}]\n",
        "unknown keys: gpu",
    ),
    "unknown_endpoint_key": (remote("api_key: sk-123"), "unknown keys: api_key"),
    "unknown_base": (variant("name: v, base: nope"), "unknown base 'nope'"),
    "unknown_backend": (variant("name: v, base: b, backend: magic"), "backend must be one of local, openai"),
    "unknown_template": (variant("name: v, base: b, template: pirate"), "unknown template 'pirate'"),
    "unknown_fast": (variant("name: v, base: b, fast: turbo"), "fast must be one of"),
    "openai_no_endpoint": (variant("name: v, base: b, backend: openai"), "has no endpoint"),
    "local_with_endpoint": (
        variant("name: v, base: b, endpoint: {base_url: 'http://127.0.0.1/v1', model: m}"),
        "backend local",
    ),
    "endpoint_text": (
        variant("name: v, base: b, backend: openai, endpoint: somewhere"),
        "endpoint must be a mapping",
    ),
    "endpoint_file_url": (
        variant("name: v, base: b, backend: openai, endpoint: {base_url: 'file:///etc/passwd', model: m}"),
        "http(s) URL",
    ),
    "endpoint_password_in_url": (
        variant(
            "name: v, base: b, backend: openai, endpoint: {base_url: 'http://u:pw@127.0.0.1/v1', model: m}"
        ),
        "user name or password",
    ),
    # encodings and syntax
    "utf16": ((GOOD_BASE + "variants: [{name: v, base: b}]\n").encode("utf-16"), "is UTF-16"),
    "utf16le_no_bom": ((GOOD_BASE + "variants: [{name: v, base: b}]\n").encode("utf-16-le"), "is UTF-16"),
    "invalid_utf8": (
        GOOD_BASE.encode() + b"variants: [{name: v\xff\xfe, base: b}]\n",
        "line 3: bytes that are not UTF-8",
    ),
    "yaml_syntax": (GOOD_BASE.encode() + b"variants: [{name: v, base: b\n", "not valid YAML"),
    "yaml_tab_indent": (b"bases:\n\tb: {source: x/y}\nvariants: []\n", "not valid YAML"),
    "python_tag": (b"bases: !!python/object/apply:os.system ['true']\nvariants: []\n", "not valid YAML"),
    "empty_file": (b"", "is empty"),
    "only_comments": (b"# nothing here\n", "is empty"),
    "deep_nesting": (b"bases: " + b"[" * 20000 + b"\n", "cannot be read"),
    "impossible_date": (variant("name: v, base: b, description: 2020-13-45"), "cannot be read"),
    "huge_file": (b"# " + b"x" * (3 * 2**20) + b"\n", "too big"),
}

# numeric settings in the file: endpoint timeout_s
for value in BAD_NUMBERS:
    BAD_FILES[f"timeout_{value or 'empty'}"] = (remote(f"timeout_s: '{value}'"), "timeout_s must be")
for value in (".nan", ".inf", "-.inf", "-3", "0", "1e9", "[1]", "true"):
    BAD_FILES[f"timeout_yaml_{value}"] = (remote(f"timeout_s: {value}"), "timeout_s must be")

# api_key_env: any variable of the environment would be sent to the endpoint
for value in (
    "PATH", "HOME", "SHELL", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GITHUB_TOKEN", "GH_TOKEN",
    "PYPI_TOKEN", "DJANGO_SECRET_KEY", "VICHAT_TRAIN_SECRET", "HF_TOKEN", "vllm_api_key", "A-B_KEY", "'$HOME_KEY'",
    "''", "5", "[OPENAI_API_KEY]",
):  # fmt: skip
    BAD_FILES[f"api_key_env_{value.strip(chr(39)) or 'empty'}"] = (
        remote(f"api_key_env: {value}"),
        "api_key_env",
    )


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_variant_file(tmp_path, unchanged, name):
    data, message = BAD_FILES[name]
    path = tmp_path / "models.yaml"
    path.write_bytes(data)
    with unchanged(tmp_path):
        outcome = invoke("vichat.chat", ["--list", "--models", str(path)])
    assert_clean_failure(outcome, contains=message)
    assert outcome.code == 2 and str(path) in outcome.err


def test_variant_file_is_a_folder(tmp_path, unchanged):
    with unchanged(tmp_path):
        outcome = invoke("vichat.chat", ["--list", "--models", str(tmp_path)])
    assert_clean_failure(outcome, contains="is a folder")


def test_secret_values_never_show(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-secret")
    path = tmp_path / "models.yaml"
    path.write_bytes(remote("api_key_env: AWS_SECRET_ACCESS_KEY"))
    outcome = invoke("vichat.chat", ["--list", "--models", str(path)])
    assert_clean_failure(outcome, contains="credential of another service")
    assert "wJalrXUtnFEMI" not in outcome.text


# ------------------------------------------------------------------------------------------ chat flags


def _invalid(flag: str, value: str) -> bool:
    name = flag.removeprefix("--").replace("-", "_")
    low, high = RANGES.get(name, (0, None))
    try:
        checks.number(
            flag, value, minimum=low, maximum=high, integer=name in ("max_new_tokens", "top_k", "seed")
        )
    except ViChatError:
        return True
    return False


FLAG_CASES = [
    (flag, value)
    for flag in ("--max-new-tokens", "--temperature", "--top-k", "--top-p", "--repetition-penalty", "--seed")
    for value in BAD_NUMBERS
    if _invalid(flag, value)
]


@pytest.mark.parametrize("flag, value", FLAG_CASES)
def test_bad_chat_number(flag, value):
    outcome = invoke("vichat.chat", ["--variant", "Gemma-Base", f"{flag}={value}", "xin chào"])
    assert_clean_failure(outcome, contains=flag)
    assert outcome.code == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variant", "Gemma-Base", ""], "prompt is empty"),
        (["--variant", "Gemma-Base", " \n\t "], "prompt is empty"),
        (["--variant", "Gemma-Base", "chữ " * 250_000], "characters long"),
        (["--variant", "Gemma-Base"], "give a PROMPT"),
        (["--variant", "Nope", "xin chào"], "unknown variant 'Nope'"),
        (["--variant", "Bloomz", "--models", "assets/models.yaml", "xin chào"], "not downloaded"),
    ],
    ids=["empty", "blank", "huge", "missing", "unknown_variant", "variant_not_here"],
)
def test_bad_chat_prompt_or_variant(argv, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    outcome = invoke("vichat.chat", argv)
    assert_clean_failure(outcome, contains=message)
    assert outcome.code == 2


def test_missing_models_file(tmp_path):
    outcome = invoke("vichat.chat", ["--list", "--models", str(tmp_path / "nowhere.yaml")])
    assert_clean_failure(outcome, contains="not found")


# ----------------------------------------------------------------------------------------- bad adapters


def _spoil_weights(folder: Path, how: str) -> None:
    path = folder / "adapter_model.safetensors"
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return
    weights = load_file(path)
    key = sorted(k for k in weights if "lora_A" in k)[0]
    if how == "wrong_shapes":
        weights[key] = torch.zeros(weights[key].shape[0], weights[key].shape[1] * 2)
    else:  # missing tensor
        del weights[key.replace("lora_A", "lora_B")]
    save_file(weights, path, metadata={"format": "pt"})


def _spoil_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))


SPOIL = {
    "truncated": (lambda f: _spoil_weights(f, "truncated"), "truncated"),
    "wrong_shapes": (lambda f: _spoil_weights(f, "wrong_shapes"), "does not fit base"),
    "missing_tensor": (lambda f: _spoil_weights(f, "missing"), "needs tensors"),
    "pissa": (lambda f: _spoil_config(f, init_lora_weights="pissa"), "pissa"),
    "olora": (lambda f: _spoil_config(f, init_lora_weights="olora"), "olora"),
    "other_base": (lambda f: (f / "vichat.json").write_text('{"base": "gptj"}'), "trained on base 'gptj'"),
    "rank_disagrees": (lambda f: _spoil_config(f, r=2), "does not fit base"),  # fails inside PEFT: undone
    "config_utf16": (
        lambda f: (f / "adapter_config.json").write_bytes(
            (f / "adapter_config.json").read_text().encode("utf-16")
        ),
        "UTF-16",
    ),
}


@pytest.fixture(scope="module")
def spoilt(tiny_models, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("spoilt-adapters")
    folders = {}
    for name, (spoil, _) in SPOIL.items():
        folders[name] = root / name
        shutil.copytree(tiny_models["bloom-b"], folders[name])
        spoil(folders[name])
    variants = [
        {"name": "base", "base": "bloom"},
        {"name": "sib", "base": "bloom", "adapter": str(tiny_models["bloom-a"])},
    ] + [{"name": n, "base": "bloom", "adapter": str(f)} for n, f in folders.items()]
    models = root / "models.yaml"
    models.write_text(
        yaml.safe_dump({"bases": {"bloom": {"source": str(tiny_models["bloom"])}}, "variants": variants})
    )
    return {"root": root, "folders": folders, "models": models}


@pytest.mark.parametrize("name", sorted(SPOIL))
def test_corrupt_adapter_through_the_cli(spoilt, tiny_models, unchanged, name):
    with unchanged(spoilt["root"], tiny_models["bloom"], tiny_models["bloom-a"]):
        outcome = invoke("vichat.chat", ["--models", str(spoilt["models"]), "--variant", name, "xin chào"])
    assert_clean_failure(outcome, contains=SPOIL[name][1])
    assert str(spoilt["folders"][name]) in outcome.err


def _state(reg: Registry) -> tuple:
    base = reg.loaded_base("bloom")
    model = base.model.get_base_model() if base.is_peft else base.model
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        if "lora_" not in name:
            digest.update(name.replace(".base_layer", "").encode() + p.detach().numpy().tobytes())
    layout = [(n, type(m).__name__) for n, m in base.model.named_modules()]
    ids = torch.tensor([[4, 8, 15, 16, 23, 42]])
    outputs = []
    for adapter in (None, "sib"):
        with base.use(adapter) as m, torch.no_grad():
            outputs.append(m(input_ids=ids).logits.numpy().tobytes())
    return digest.hexdigest(), layout, outputs, sorted(base.adapters)


def test_corrupt_adapters_through_the_registry_leave_the_base_bit_identical(spoilt):
    reg = Registry.from_yaml(spoilt["models"], device="cpu", progress=lambda m: None)
    reg.prepare("sib")
    before = _state(reg)
    nll = reg.nll("base", ["Hà Nội"], ["Việt Nam"]), reg.nll("sib", ["Hà Nội"], ["Việt Nam"])
    for name, (_, message) in SPOIL.items():
        with pytest.raises(ViChatError, match="(?i)" + message.replace("(", r"\(").replace(")", r"\)")):
            reg.prepare(name)
        assert _state(reg) == before, name
    assert (reg.nll("base", ["Hà Nội"], ["Việt Nam"]), reg.nll("sib", ["Hà Nội"], ["Việt Nam"])) == nll
