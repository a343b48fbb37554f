"""ViChat: chat with Vietnamese chatbots built from open LLMs (arXiv 2309.04646, reproduced).

python app.py [--models assets/models.yaml] [--host 127.0.0.1] [--port 7860] [--runs runs]
              [--concurrency N] [--queue-size 16] [--train-config FILE ...] [--public]

Public mode (on a Hugging Face Space, where SPACE_ID is set, or with --public) limits what a visitor may do:
see ui/public.py.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gradio as gr

from ui.chat import build_chat_tab
from ui.common import Cancellations, refreshed_choices
from ui.compare import build_compare_tab
from ui.datasets import build_datasets_tab
from ui.judge import build_judge_tab
from ui.public import Guard, Policy, served_folders
from ui.spaces import prefetch_hub_bases
from ui.train import build_train_tab, preset_files, register_trained
from vichat.checks import arg
from vichat.cli import run
from vichat.paths import MODELS_YAML, REPO_ROOT
from vichat.registry import Registry

HEADER = "# ViChat\nVietnamese chatbots from open LLMs with LoRA (reproducing arXiv 2309.04646)."
CACHE_CLEANUP = (900, 3600)  # every 15 min, delete uploads and outputs older than an hour (and all at exit)


def build_app(
    registry: Registry, runs: Path, train_configs: list[Path] | None = None, guard: Guard | None = None
) -> gr.Blocks:
    guard = guard or Guard()
    cancellations = Cancellations()
    guard.on_close(cancellations.close_session)
    register_trained(registry, runs / "app-train")  # demo adapters trained here before
    with gr.Blocks(title="ViChat", delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown(HEADER)
        gr.Markdown(guard.banner(), visible=guard.public, elem_id="public-mode")
        with gr.Tab("Chat"):
            pickers = [build_chat_tab(registry, cancellations, guard, runs)]
        with gr.Tab("Compare"):
            pickers += build_compare_tab(registry, cancellations, guard, runs)
        with gr.Tab("Datasets"):
            build_datasets_tab(registry, runs, guard)
        with gr.Tab("Judge"):
            pickers.append(build_judge_tab(registry, runs / "eval", guard, served_folders(runs)))
        with gr.Tab("Train"):
            build_train_tab(registry, runs / "app-train", preset_files(train_configs), pickers, guard)

        def on_load():  # variants registered since the app started (a training run) show up everywhere
            return [refreshed_choices(registry) for _ in pickers]

        def on_close(request: gr.Request) -> None:  # closing the tab cancels, deletes uploads, forgets jobs
            guard.close_session(request.session_hash)

        demo.load(on_load, None, pickers, queue=False, api_visibility="private")
        demo.unload(on_close)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(MODELS_YAML))
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))  # Spaces: 0.0.0.0
    port = arg("--port", minimum=1, maximum=65535, integer=True)
    p.add_argument("--port", type=port, default=os.environ.get("GRADIO_SERVER_PORT", "7860"))
    p.add_argument("--runs", default=str(REPO_ROOT / "runs"), help="where eval results and app runs go")
    p.add_argument(
        "--concurrency",
        type=arg("--concurrency", minimum=1, maximum=64, integer=True),
        default=None,
        help="generations at once (default: the fast engine's batch, 8, fewer where memory is short)",
    )
    p.add_argument(
        "--queue-size",
        type=arg("--queue-size", minimum=1, maximum=10_000, integer=True),
        default=16,
        help="waiting requests before 'queue is full'",
    )
    p.add_argument("--train-config", action="append", default=[], help="extra training preset (repeatable)")
    p.add_argument("--public", action="store_true", help="public mode (on by itself where SPACE_ID is set)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    guard = Guard(Policy.from_env(public=args.public))
    registry = Registry.from_yaml(args.models)
    if args.concurrency is not None:
        registry.max_batch = args.concurrency  # the batch bound and the app's generate limit alike
    prefetch_hub_bases(registry)  # on a Hugging Face Space with a GPU: fetch the paper's bases
    ready = [n for n in registry.available_names() if registry.variant(n).backend == "local"]
    if ready:  # the default base loads now, in the background, not on the first message
        registry.preload([n for n in registry.siblings(ready[0]) if n in ready])
    runs = Path(args.runs)
    demo = build_app(registry, runs, [Path(c) for c in args.train_config], guard)
    demo.queue(default_concurrency_limit=registry.max_batch, max_size=args.queue_size)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        max_file_size=guard.policy.max_upload_bytes,
        allowed_paths=served_folders(runs),  # the judge's downloads, wherever --runs points
    )


if __name__ == "__main__":
    raise SystemExit(run(main))
