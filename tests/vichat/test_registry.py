import threading
from pathlib import Path

import pytest
import yaml

from vichat.errors import UnknownVariantError, VariantUnavailableError, ViChatError
from vichat.generation import GenerationSettings
from vichat.loading import lora_targets
from vichat.paths import MODELS_YAML
from vichat.registry import Registry

GREEDY = GenerationSettings(max_new_tokens=10, temperature=0)
PROMPT = "Hà Nội là thủ đô của nước nào?"


def test_shipped_variant_file_loads_with_the_papers_variants():
    reg = Registry.from_yaml(MODELS_YAML)
    for name in (
        "Gemma-Base",
        "Gemma-Chat",
        "Gemma-Doctor",
        "Bloomz",
        "Bloomz-Chat",
        "Bloomz-Doctor",
        "GPTJ",
        "GPTJ-Chat",
        "GPTJ-Doctor",
    ):
        reg.variant(name)
    assert reg.bases["bloomz-7b1-mt"].source == "bigscience/bloomz-7b1-mt"
    assert reg.bases["gptj-6b-vi"].source == "VietAI/gpt-j-6B-vietnamese-news"
    assert reg.variant("Bloomz-Doctor").template == "doctor"
    assert reg.availability("Gemma-Base").ok
    assert "not downloaded" in reg.availability("Bloomz").reason


def test_unknown_variant_names_the_known_ones(tiny_registry):
    with pytest.raises(UnknownVariantError, match="known: bloom-base, bloom-chat"):
        tiny_registry.generate("Bloomz-Pirate", PROMPT)


@pytest.mark.parametrize("arch", ["bloom", "gptj"])
def test_one_base_two_adapters(tiny_registry, arch):
    reg = tiny_registry
    base1 = reg.generate(f"{arch}-base", PROMPT, GREEDY)
    chat = reg.generate(f"{arch}-chat", PROMPT, GREEDY)
    doctor = reg.generate(f"{arch}-doctor", PROMPT, GREEDY)
    assert chat != base1 and doctor != base1
    assert reg.generate(f"{arch}-base", PROMPT, GREEDY) == base1  # adapters disabled: the base exactly
    assert reg.generate(f"{arch}-chat", PROMPT, GREEDY) == chat
    assert len(reg.loaded()) == 1  # one copy of the base serves all three
    loaded = reg.loaded()[arch]
    assert set(loaded.adapters) == {f"{arch}-chat", f"{arch}-doctor"}
    wrapped = {
        n.split(".")[-1] for n, _ in loaded.model.named_modules() if n.endswith(tuple(lora_targets(arch)))
    }
    assert wrapped == set(lora_targets(arch))
    assert any("8-bit loading needs CUDA" in n for n in loaded.notices)


def test_concurrent_variants_never_mix_adapters(tiny_registry):
    reg = tiny_registry
    names = ["bloom-base", "bloom-chat", "bloom-doctor"] * 3
    sequential = {n: reg.generate(n, PROMPT, GREEDY) for n in set(names)}
    results: dict[int, str] = {}

    def ask(i: int, name: str) -> None:
        results[i] = reg.generate(name, PROMPT, GREEDY)

    threads = [threading.Thread(target=ask, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(names))] == [sequential[n] for n in names]


def test_batch_and_nll(tiny_registry):
    reg = tiny_registry
    answers = reg.generate_batch("gptj-chat", [PROMPT, "Viết một câu thơ."], GREEDY)
    assert answers[0] == reg.generate("gptj-chat", PROMPT, GREEDY)
    nll_base = reg.nll("gptj-base", [PROMPT], ["Việt Nam."])
    nll_chat = reg.nll("gptj-chat", [PROMPT], ["Việt Nam."])
    assert nll_base[0] > 0 and nll_base != nll_chat


def _registry_with_adapter(tmp_path: Path, tiny_models, adapter: str) -> Registry:
    data = {
        "bases": {"b": {"source": str(tiny_models["bloom"])}},
        "variants": [{"name": "x", "base": "b", "adapter": adapter}],
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(data))
    return Registry.from_yaml(tmp_path / "m.yaml", device="cpu", progress=lambda m: None)


def test_missing_adapter_says_so(tmp_path, tiny_models):
    reg = _registry_with_adapter(tmp_path, tiny_models, str(tmp_path / "nowhere"))
    assert "not found" in reg.availability("x").reason
    with pytest.raises(VariantUnavailableError, match="not found"):
        reg.generate("x", PROMPT)


def test_pickle_adapter_is_refused(tmp_path, tiny_models):
    folder = tmp_path / "bin-adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04not really")
    reg = _registry_with_adapter(tmp_path, tiny_models, str(folder))
    with pytest.raises(VariantUnavailableError, match="not in safetensors"):
        reg.generate("x", PROMPT)


def test_adapter_for_another_architecture_is_a_clear_error(tmp_path, tiny_models):
    reg = _registry_with_adapter(tmp_path, tiny_models, str(tiny_models["gptj-a"]))
    with pytest.raises(ViChatError, match="does not fit base 'b': tensor .* which the base lacks") as e:
        reg.generate("x", PROMPT)
    assert str(tiny_models["gptj-a"]) in str(e.value)
    assert not reg.loaded()["b"].is_peft  # refused before PEFT touched the base


def test_bad_variant_files(tmp_path):
    bad = {"bases": {"b": {"source": "x/y"}}, "variants": [{"name": "v", "base": "b", "colour": "red"}]}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ViChatError, match="unknown keys: colour"):
        Registry.from_yaml(tmp_path / "m.yaml")
    bad["variants"] = [{"name": "v", "base": "nope"}]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ViChatError, match="unknown base 'nope'"):
        Registry.from_yaml(tmp_path / "m.yaml")


def test_hub_base_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    data = {"bases": {"b": {"source": "nobody-here/no-such-model"}}, "variants": [{"name": "v", "base": "b"}]}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(data))
    reg = Registry.from_yaml(tmp_path / "m.yaml", device="cpu", progress=lambda m: None)
    assert not reg.availability("v").ok
    with pytest.raises(VariantUnavailableError, match="nobody-here/no-such-model is not downloaded"):
        reg.generate("v", PROMPT)


def test_variant_file_shapes_are_checked_with_file_variant_and_key(tmp_path):
    path = tmp_path / "m.yaml"

    def refused(text: str, match: str) -> None:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ViChatError, match=match) as e:
            Registry.from_yaml(path)
        assert str(path) in str(e.value)

    refused(
        "bases: {}\nvariants:\n  - name: 5\n    base: b\n",
        r"variant #1: name must be non-empty text .*quote it",
    )
    refused(
        "bases: {b: {source: x/y}}\nvariants: [Gemma]\n", r"variant #1 is text \('Gemma'\), not a mapping"
    )
    refused("bases: [x]\nvariants: []\n", "bases must be a mapping")
    refused("bases: {b: {source: x/y}}\nvariants: {name: v}\n", "variants must be a list")
    refused("- name: v\n", "must be a mapping with keys 'bases' and 'variants'")
    refused(
        "bases: {b: {source: x/y, load_in_8bit: maybe}}\nvariants: [{name: v, base: b}]\n", "load_in_8bit"
    )
    refused("bases: {b: {source: x/y}}\nvariants: [{name: v, base: b}]\nextra: 1\n", "unknown keys: extra")
    refused(
        "bases: {b: {source: x/y}}\nvariants: [{name: v, base: b\n", r"line \d+, column \d+: not valid YAML"
    )
    path.write_bytes("bases: {}\nvariants: []\n".encode("utf-16"))
    with pytest.raises(ViChatError, match="is UTF-16"):
        Registry.from_yaml(path)
    path.write_bytes(b"bases: {}\nvariants:\n  - name: \xff\n")
    with pytest.raises(ViChatError, match="line 3: bytes that are not UTF-8"):
        Registry.from_yaml(path)
    with pytest.raises(ViChatError, match="not found: give an existing file with --models"):
        Registry.from_yaml(tmp_path / "missing.yaml")


def test_yaml_on_off_for_fast_is_understood(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "bases: {b: {source: x/y}}\nvariants: [{name: v, base: b, fast: off}]\n", encoding="utf-8"
    )
    assert Registry.from_yaml(path).variant("v").fast == "off"
