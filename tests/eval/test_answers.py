"""Answer generation: appended as it goes, resumed after a kill, nothing new on a rerun."""

import json

import pytest

from eval.answers import (
    OpenAIAnswers,
    ReferenceAnswers,
    answers_path,
    generate_answers,
    load_answers,
    main,
    paper_settings,
    read_answers,
)
from eval.client import ChatClient
from eval.sets import load_eval_set
from vichat.cli import run
from vichat.errors import ViChatError


class StandIn:
    """A generator with the registry's method; can be told to die after some batches."""

    def __init__(self, die_after: int | None = None):
        self.batches: list[list[str]] = []
        self.die_after = die_after

    def generate_batch(self, variant_name, instructions, settings):
        if self.die_after is not None and len(self.batches) >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.batches.append(list(instructions))
        return [f"{variant_name}: {text} (seed {settings.seed})" for text in instructions]


def test_paper_decoding_and_seed():
    s = paper_settings(7)
    assert (s.max_new_tokens, s.temperature, s.top_k, s.repetition_penalty, s.seed) == (256, 0.5, 20, 1.2, 7)


def test_generates_appends_and_reruns_nothing(tiny_set, tmp_path):
    es = load_eval_set(tiny_set)
    gen = StandIn()
    added = generate_answers(es, "M", gen, tmp_path, paper_settings(0), batch_size=3, progress=False)
    assert added == 4 and [len(b) for b in gen.batches] == [3, 1]
    path = answers_path(tmp_path, "tiny", "M")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["g1", "g2", "g3", "k1"]
    assert rows[0]["variant"] == "M" and rows[0]["settings"]["temperature"] == 0.5
    assert rows[0]["settings"]["seed"] == 0 and rows[0]["settings"]["batch_size"] == 3
    again = StandIn()
    assert generate_answers(es, "M", again, tmp_path, paper_settings(0), progress=False) == 0
    assert again.batches == []


def test_killed_run_resumes_without_redoing(tiny_set, tmp_path):
    es = load_eval_set(tiny_set)
    with pytest.raises(KeyboardInterrupt):
        generate_answers(
            es, "M", StandIn(die_after=1), tmp_path, paper_settings(0), batch_size=2, progress=False
        )
    assert list(read_answers(answers_path(tmp_path, "tiny", "M"))) == ["g1", "g2"]
    resumed = StandIn()
    assert generate_answers(es, "M", resumed, tmp_path, paper_settings(0), batch_size=2, progress=False) == 2
    assert resumed.batches == [["Câu hỏi g3?", "Câu hỏi k1?"]]
    assert list(read_answers(answers_path(tmp_path, "tiny", "M"))) == ["g1", "g2", "g3", "k1"]


def test_torn_last_line_is_dropped_and_redone(tiny_set, tmp_path):
    es = load_eval_set(tiny_set)
    generate_answers(es, "M", StandIn(), tmp_path, paper_settings(0), limit=2, progress=False)
    path = answers_path(tmp_path, "tiny", "M")
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"id": "g3", "variant": "M", "ans')  # killed mid-write
    gen = StandIn()
    assert generate_answers(es, "M", gen, tmp_path, paper_settings(0), progress=False) == 2
    assert list(read_answers(path)) == ["g1", "g2", "g3", "k1"]


def test_limit_and_other_settings_refused(tiny_set, tmp_path):
    es = load_eval_set(tiny_set)
    assert generate_answers(es, "M", StandIn(), tmp_path, paper_settings(0), limit=1, progress=False) == 1
    with pytest.raises(ViChatError, match="other settings"):
        generate_answers(es, "M", StandIn(), tmp_path, paper_settings(1), progress=False)


def test_reference_variant_and_fallback(tiny_set, tmp_path):
    es = load_eval_set(tiny_set)
    assert load_answers(tmp_path, es, "reference")["g1"] == "Đáp g1 [score=8]"  # no file: the set itself
    generate_answers(es, "reference", ReferenceAnswers(es), tmp_path, paper_settings(0), progress=False)
    rows = read_answers(answers_path(tmp_path, "tiny", "reference"))
    assert rows["k1"]["answer"] == "Đáp k1 [score=8]" and rows["k1"]["settings"] == {"source": "reference"}
    with pytest.raises(ViChatError, match="python -m eval.answers --variants X"):
        load_answers(tmp_path, es, "X")


def test_openai_variant_through_the_local_server(tiny_set, tmp_path, server, config):
    es = load_eval_set(tiny_set)
    gen = OpenAIAnswers(ChatClient(config), max_tokens=64)
    added = generate_answers(
        es,
        "openai:gpt-4o-mini",
        gen,
        tmp_path,
        paper_settings(0),
        extra_settings={"max_tokens": 64},
        progress=False,
    )
    assert added == 4 and server.calls == 4
    body = server.requests[0]["body"]
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.5 and body["seed"] == 0
    path = answers_path(tmp_path, "tiny", "openai:gpt-4o-mini")
    assert path.name == "openai_gpt-4o-mini.jsonl"
    assert read_answers(path)["g1"]["answer"].startswith("Trả lời mẫu")


def test_cli_reference_and_errors(tiny_set, tmp_path, capsys):
    assert run(main, ["--variants", "reference", "--set", str(tiny_set), "--out-dir", str(tmp_path)]) == 0
    assert "reference: 4 new answers" in capsys.readouterr().out
    assert run(main, ["--variants", " ", "--set", str(tiny_set), "--out-dir", str(tmp_path)]) == 2
    assert run(main, ["--variants", "reference", "--set", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_cli_unknown_local_variant_fails_before_any_work(tiny_set, tmp_path, tiny_models_yaml, capsys):
    argv = ["--variants", "reference,NoSuchModel", "--set", str(tiny_set), "--out-dir", str(tmp_path)]
    assert run(main, [*argv, "--models", str(tiny_models_yaml)]) == 2
    assert "NoSuchModel" in capsys.readouterr().err
    assert not answers_path(tmp_path, "tiny", "reference").exists()


def test_real_registry_generates_and_resumes(tiny_set, tmp_path, tiny_registry):
    es = load_eval_set(tiny_set)
    settings = paper_settings(0).with_(max_new_tokens=12)  # the paper's decoding, shorter for speed
    assert (
        generate_answers(
            es, "bloom-chat", tiny_registry, tmp_path, settings, batch_size=2, limit=2, progress=False
        )
        == 2
    )
    path = answers_path(tmp_path, "tiny", "bloom-chat")
    first = read_answers(path)
    assert list(first) == ["g1", "g2"] and all(isinstance(r["answer"], str) for r in first.values())
    assert first["g1"]["settings"]["top_k"] == 20 and first["g1"]["settings"]["seed"] == 0
    assert (
        generate_answers(es, "bloom-chat", tiny_registry, tmp_path, settings, batch_size=2, progress=False)
        == 2
    )
    assert list(read_answers(path)) == ["g1", "g2", "g3", "k1"]
    assert read_answers(path)["g1"] == first["g1"]
    again = tmp_path / "again"
    generate_answers(es, "bloom-chat", tiny_registry, again, settings, batch_size=2, limit=2, progress=False)
    assert (
        read_answers(answers_path(again, "tiny", "bloom-chat"))["g1"]["answer"] == first["g1"]["answer"]
    )  # seeded


def test_answers_and_likelihoods_of_an_adapter_retrained_in_place_are_never_reused(
    tiny_set, tmp_path, tiny_models
):
    import shutil

    import yaml

    from eval.offline import compute_nll, read_nll
    from vichat.registry import Registry

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_models["bloom-a"], adapter)
    models = tmp_path / "models.yaml"
    models.write_text(
        yaml.safe_dump(
            {
                "bases": {"bloom": {"source": str(tiny_models["bloom"])}},
                "variants": [{"name": "doc", "base": "bloom", "template": "doctor", "adapter": str(adapter)}],
            }
        )
    )
    es = load_eval_set(tiny_set)
    settings = paper_settings(0).with_(max_new_tokens=8)
    out = tmp_path / "eval"
    reg = Registry.from_yaml(models, device="cpu", progress=lambda m: None)
    assert generate_answers(es, "doc", reg, out, settings, batch_size=2, limit=2, progress=False) == 2
    assert compute_nll(es, "doc", reg, out, progress=False) == len(es.questions)
    recorded = read_answers(answers_path(out, "tiny", "doc"))["g1"]["settings"]["model"]
    assert recorded["adapter"].startswith("sha256:") and recorded["template"] == "doctor"
    # the same adapter: a rerun resumes
    assert generate_answers(es, "doc", reg, out, settings, batch_size=2, progress=False) == 2

    for name in ("adapter_model.safetensors",):  # retrained in place: other weights in the same folder
        shutil.copyfile(tiny_models["bloom-b"] / name, adapter / name)
    retrained = Registry.from_yaml(models, device="cpu", progress=lambda m: None)
    before = answers_path(out, "tiny", "doc").read_bytes()
    with pytest.raises(ViChatError, match="answers made with another model"):
        generate_answers(es, "doc", retrained, out, settings, batch_size=2, progress=False)
    with pytest.raises(ViChatError, match="a likelihood scored with another model"):
        compute_nll(es, "doc", retrained, out, progress=False)
    assert answers_path(out, "tiny", "doc").read_bytes() == before  # nothing lost
    assert len(read_nll(out, "tiny", "doc")) == len(es.questions)


def test_answers_made_without_the_guard_are_not_taken_for_guarded_ones(tiny_set, tmp_path, tiny_models):
    import yaml

    from eval.offline import compute_nll
    from vichat.registry import Registry

    def registry(guard: str) -> Registry:
        variant = {
            "name": "doc",
            "base": "bloom",
            "template": "doctor",
            "adapter": str(tiny_models["bloom-a"]),
        }
        data = {
            "bases": {"bloom": {"source": str(tiny_models["bloom"])}},
            "variants": [variant | {"guard": guard}],
        }
        path = tmp_path / f"models-{guard}.yaml"
        path.write_text(yaml.safe_dump(data))
        return Registry.from_yaml(path, device="cpu", progress=lambda m: None)

    es = load_eval_set(tiny_set)
    settings = paper_settings(0).with_(max_new_tokens=8)
    out = tmp_path / "eval"
    raw = registry("off")
    assert generate_answers(es, "doc", raw, out, settings, batch_size=2, limit=2, progress=False) == 2
    assert compute_nll(es, "doc", raw, out, progress=False) == len(es.questions)
    assert "guard" not in read_answers(answers_path(out, "tiny", "doc"))["g1"]["settings"]["model"]
    guarded = registry("medical")
    with pytest.raises(ViChatError, match="answers made with another model"):
        generate_answers(es, "doc", guarded, out, settings, batch_size=2, progress=False)
    assert compute_nll(es, "doc", guarded, out, progress=False) == 0  # the same model: its likelihoods stand
