"""Quality bar of a trained adapter on its held-out split, against its base (issue: demo adapters).

    python -m train.quality --variant Gemma-Chat --base Gemma-Base --data runs/train/gemma-chat/validation.jsonl

Prints and writes (``--out``, JSON) the mean NLL of the reference answers under both variants, the share of the
tuned variant's answers that end by themselves (EOS or the template's stop marker) within the paper's 256 new
tokens, the share written in Vietnamese, and a few answers side by side.
"""

from __future__ import annotations

import argparse
import sys
import unicodedata

from train.dataset import load_records
from vichat.checks import arg
from vichat.cli import run
from vichat.errors import DataError
from vichat.files import atomic_write_json, refuse_overwriting_inputs
from vichat.generation import GenerationSettings, GenerationStats
from vichat.registry import Registry

# Letters only Vietnamese uses among Latin scripts (after NFD, tone marks are separate combining marks).
VIETNAMESE_BASE = set("ăâđêôơưĂÂĐÊÔƠƯ")
TONE_MARKS = {"\u0300", "\u0301", "\u0303", "\u0309", "\u0323"}


def is_vietnamese(text: str, threshold: float = 0.15) -> bool:
    """True when enough words carry Vietnamese letters or tone marks (code and numbers do not count)."""
    words = [w for w in text.split() if any(c.isalpha() for c in w)]
    if not words:
        return False
    marked = 0
    for w in words:
        nfd = unicodedata.normalize("NFD", w)
        if any(c in TONE_MARKS for c in nfd) or any(c in VIETNAMESE_BASE for c in w):
            marked += 1
    return marked / len(words) >= threshold


def answers(
    registry: Registry, variant: str, prompts: list[str], settings: GenerationSettings
) -> list[tuple[str, str]]:
    """(answer, what stopped it) for each prompt; on the fast path they decode together in one batch."""
    stats = [GenerationStats() for _ in prompts]
    texts = [""] * len(prompts)
    for i, piece in registry.stream_together([(variant, p) for p in prompts], settings, stats=stats):
        texts[i] += piece
    return [(text.strip(), s.stopped_by) for text, s in zip(texts, stats, strict=True)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", required=True)
    p.add_argument("--base", required=True)
    p.add_argument("--data", required=True, help="held-out prompt/response JSONL")
    p.add_argument(
        "--limit", type=arg("--limit", minimum=1, integer=True), default=20,
        help="answers to generate (NLL uses every record)",
    )  # fmt: skip
    p.add_argument("--seed", type=arg("--seed", minimum=0, maximum=2**32 - 1, integer=True), default=0)
    p.add_argument("--out", default=None, help="JSON file for the figures")
    p.add_argument("--models", default=None, help="variants file (default assets/models.yaml)")
    args = p.parse_args(argv)
    if args.out:
        refuse_overwriting_inputs([args.out], [args.data], "--out")
    records = load_records([args.data])  # bad lines: file:line, before any model loads
    if not records:
        raise DataError(f"{args.data} holds no records: give the held-out prompt/response JSONL of a run")
    registry = Registry.from_yaml(
        *([args.models] if args.models else []), progress=lambda m: print(m, file=sys.stderr)
    )
    prompts = [r["prompt"] for r in records]
    refs = [r["response"] for r in records]
    nll_base = registry.nll(args.base, prompts, refs)
    nll_tuned = registry.nll(args.variant, prompts, refs)
    settings = GenerationSettings(seed=args.seed)  # the paper's decoding: 256 new tokens, sampling
    chosen = [r["prompt"] for r in records[: args.limit]]
    rows = [
        {"prompt": prompt, "tuned": tuned, "stopped_by": stop, "vietnamese": is_vietnamese(tuned)}
        for prompt, (tuned, stop) in zip(
            chosen, answers(registry, args.variant, chosen, settings), strict=True
        )
    ]
    for row, (text, _) in zip(rows[:3], answers(registry, args.base, chosen[:3], settings), strict=True):
        row["base"] = text
    n = len(rows)
    report = {
        "variant": args.variant,
        "base": args.base,
        "records": len(records),
        "nll_base": sum(nll_base) / len(nll_base),
        "nll_tuned": sum(nll_tuned) / len(nll_tuned),
        "answers": n,
        "ended_by_itself": sum(r["stopped_by"] in ("eos", "stop") for r in rows) / n,
        "vietnamese": sum(r["vietnamese"] for r in rows) / n,
        "both": sum(r["stopped_by"] in ("eos", "stop") and r["vietnamese"] for r in rows) / n,
        "examples": [{k: r[k] for k in ("prompt", "base", "tuned")} for r in rows[:3]],
        "all_answers": rows,
    }
    print(f"{args.variant} vs {args.base} on {len(records)} held-out records ({n} answers generated)")
    print(f"  NLL of references: base {report['nll_base']:.3f}, tuned {report['nll_tuned']:.3f}")
    print(
        f"  answers ending by themselves within 256 tokens: {report['ended_by_itself']:.0%}; "
        f"in Vietnamese: {report['vietnamese']:.0%}; both: {report['both']:.0%}"
    )
    if args.out:
        atomic_write_json(args.out, report, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
