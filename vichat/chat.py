"""Chat from the command line.

python -m vichat.chat --list [--models FILE]
python -m vichat.chat --variant Gemma-Chat [--max-new-tokens N] [--seed S] "Hà Nội có gì đẹp?"

Bad input (an unknown variant, a setting out of range, an empty prompt, a missing or malformed variant file)
is one ``error:`` line and a non-zero exit status, checked before any model loads.
"""

from __future__ import annotations

import argparse
import sys

from vichat import checks
from vichat.cli import run
from vichat.errors import PromptError
from vichat.generation import RANGES, GenerationSettings, GenerationStats
from vichat.paths import MODELS_YAML
from vichat.prompts import check_instruction
from vichat.registry import Registry


def list_variants(registry: Registry) -> str:
    rows = [("variant", "base", "adapter", "template", "available here")]
    for name in registry.names():
        v = registry.variant(name)
        a = registry.availability(name)
        rows.append((name, v.base, v.adapter or "-", v.template, ("yes: " if a.ok else "no: ") + a.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows
    )


def setting(flag: str, name: str, integer: bool = False):
    """An argparse type for a decoding setting, in the range GenerationSettings accepts."""
    low, high = RANGES[name]
    return checks.arg(flag, minimum=low, maximum=high, integer=integer)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vichat.chat",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", nargs="?", help="the instruction or question (Vietnamese)")
    p.add_argument("--variant", default="Gemma-Base")
    p.add_argument("--list", action="store_true", help="list the variants and whether each runs here")
    p.add_argument("--models", default=str(MODELS_YAML), help="variant file (default: assets/models.yaml)")
    d = GenerationSettings()
    p.add_argument(
        "--max-new-tokens", type=setting("--max-new-tokens", "max_new_tokens", True), default=d.max_new_tokens
    )
    p.add_argument(
        "--temperature",
        type=setting("--temperature", "temperature"),
        default=d.temperature,
        help="0 = greedy",
    )
    p.add_argument("--top-k", type=setting("--top-k", "top_k", True), default=d.top_k)
    p.add_argument("--top-p", type=setting("--top-p", "top_p"), default=d.top_p)
    p.add_argument(
        "--repetition-penalty",
        type=setting("--repetition-penalty", "repetition_penalty"),
        default=d.repetition_penalty,
    )
    p.add_argument("--seed", type=checks.arg("--seed", minimum=0, integer=True), default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--stats", action="store_true", help="print time to first token and tokens/s at the end")
    args = p.parse_args(argv)
    registry = Registry.from_yaml(
        args.models, device=args.device, progress=lambda m: print(m, file=sys.stderr)
    )
    if args.list:
        print(list_variants(registry))
        return 0
    if args.prompt is None:
        raise PromptError('give a PROMPT (the question, in quotes: "Hà Nội có gì đẹp?"), or --list')
    check_instruction(args.prompt)
    registry.variant(args.variant)
    settings = GenerationSettings(
        args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.repetition_penalty, args.seed
    )
    stats = GenerationStats()
    for piece in registry.stream(args.variant, args.prompt, settings, stats=stats):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if args.stats:
        print(
            f"[{stats.new_tokens} tokens, first after {stats.first_token_s or 0:.2f}s, "
            f"{stats.tokens_per_s:.1f} tok/s, stopped by {stats.stopped_by}]",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
