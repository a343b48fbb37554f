import threading

import pytest

from vichat.errors import PromptError, SettingsError
from vichat.generation import GenerationSettings, GenerationStats, generate_batch, stream

GREEDY = GenerationSettings(max_new_tokens=12, temperature=0)


def test_paper_defaults():
    s = GenerationSettings()
    assert (s.max_new_tokens, s.temperature, s.top_k, s.repetition_penalty) == (256, 0.5, 20, 1.2)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("max_new_tokens", 0, "[1, 2048]"),
        ("temperature", 3.0, "[0.0, 2.0]"),
        ("top_k", -1, "[0, 1000]"),
        ("repetition_penalty", 0.5, "[1.0, 2.0]"),
        ("top_p", 0, "[0.01, 1.0]"),
        ("max_new_tokens", 2.5, "whole"),
        ("temperature", "hot", "number"),
        ("seed", -3, "seed"),
    ],
)
def test_settings_out_of_range_name_the_setting(field, value, fragment):
    with pytest.raises(SettingsError) as e:
        GenerationSettings(**{field: value})
    assert field in str(e.value) and fragment in str(e.value)


@pytest.fixture(scope="module")
def bloom(tiny_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_models["bloom"]).eval(), AutoTokenizer.from_pretrained(
        tiny_models["bloom"]
    )


def test_stream_pieces_join_to_the_batch_answer(bloom):
    model, tok = bloom
    stats = GenerationStats()
    pieces = list(stream(model, tok, "Hà Nội là", GREEDY, stats=stats))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == generate_batch(model, tok, ["Hà Nội là"], GREEDY)[0]
    assert stats.new_tokens == 12 and stats.stopped_by == "length" and stats.first_token_s is not None


def test_batch_left_padding_matches_single(bloom):
    model, tok = bloom
    prompts = ["Hà Nội", "Tôi bị đau đầu và sốt nhẹ từ hôm qua"]
    batch = generate_batch(model, tok, prompts, GREEDY)
    single = [generate_batch(model, tok, [p], GREEDY)[0] for p in prompts]
    assert batch == single


def test_seed_makes_sampling_reproducible(bloom):
    model, tok = bloom
    s = GenerationSettings(max_new_tokens=16, temperature=1.5, top_k=0, seed=7)
    a = generate_batch(model, tok, ["Việt Nam"], s)
    assert a == generate_batch(model, tok, ["Việt Nam"], s)
    others = {generate_batch(model, tok, ["Việt Nam"], s.with_(seed=k))[0] for k in range(8, 12)}
    assert others - set(a)


def test_cancel_stops_the_stream(bloom):
    model, tok = bloom
    cancel = threading.Event()
    stats = GenerationStats()
    got = []
    for piece in stream(
        model,
        tok,
        "Hà Nội",
        GenerationSettings(max_new_tokens=200, temperature=0),
        cancel=cancel,
        stats=stats,
    ):
        got.append(piece)
        cancel.set()
    assert stats.stopped_by == "cancelled" and stats.new_tokens < 200


def test_closing_the_iterator_stops_generation(bloom):
    model, tok = bloom
    stats = GenerationStats()
    it = stream(model, tok, "Hà Nội", GenerationSettings(max_new_tokens=200, temperature=0), stats=stats)
    next(it)
    it.close()
    assert stats.new_tokens < 200


def test_stop_marker_is_cut_from_stream(bloom):
    model, tok = bloom
    full = generate_batch(model, tok, ["Hà Nội"], GREEDY)[0]
    assert len(full) > 8
    marker = full[4:7]  # pretend something the model writes is a stop marker
    got = "".join(stream(model, tok, "Hà Nội", GREEDY, stops=(marker,)))
    assert marker not in got and full.startswith(got.strip()) and len(got) <= 4


def test_prompt_longer_than_context_is_a_clear_error(tiny_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_models["gptj"])  # n_positions 512
    tok = AutoTokenizer.from_pretrained(tiny_models["gptj"])
    with pytest.raises(PromptError, match="Shorten the prompt"):
        list(stream(model, tok, "Hà Nội là thủ đô " * 200, GREEDY))
