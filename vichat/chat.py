"""Chat from the command line.

python -m vichat.chat --list
python -m vichat.chat --variant Gemma-Chat [--max-new-tokens N] [--seed S] "Hà Nội có gì đẹp?"
"""

from __future__ import annotations

import argparse
import sys

from vichat.errors import ViChatError
from vichat.generation import GenerationSettings, GenerationStats
from vichat.paths import MODELS_YAML
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
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=d.top_k)
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--stats", action="store_true", help="print time to first token and tokens/s at the end")
    args = p.parse_args(argv)
    try:
        registry = Registry.from_yaml(
            args.models, device=args.device, progress=lambda m: print(m, file=sys.stderr)
        )
        if args.list:
            print(list_variants(registry))
            return 0
        if args.prompt is None:
            p.error("give a PROMPT, or --list")
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
    except ViChatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
