"""ViChat: chat with Vietnamese chatbots built from open LLMs (arXiv 2309.04646, reproduced).

python app.py [--models assets/models.yaml] [--host 127.0.0.1] [--port 7860] [--runs runs]
              [--concurrency 1] [--queue-size 32] [--train-config FILE ...]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gradio as gr

from vichat.paths import MODELS_YAML, REPO_ROOT
from vichat.registry import Registry
from vichat.ui.chat import build_chat_tab
from vichat.ui.common import Cancellations, refreshed_choices
from vichat.ui.compare import build_compare_tab
from vichat.ui.datasets import build_datasets_tab
from vichat.ui.judge import build_judge_tab
from vichat.ui.spaces import prefetch_hub_bases
from vichat.ui.train import build_train_tab, preset_files, register_trained

HEADER = "# ViChat\nVietnamese chatbots from open LLMs with LoRA (reproducing arXiv 2309.04646)."


def build_app(registry: Registry, runs: Path, train_configs: list[Path] | None = None) -> gr.Blocks:
    cancellations = Cancellations()
    register_trained(registry, runs / "app-train")  # demo adapters trained here before
    with gr.Blocks(title="ViChat") as demo:
        gr.Markdown(HEADER)
        with gr.Tab("Chat"):
            pickers = [build_chat_tab(registry, cancellations)]
        with gr.Tab("Compare"):
            pickers += build_compare_tab(registry, cancellations)
        with gr.Tab("Datasets"):
            build_datasets_tab(registry, runs)
        with gr.Tab("Judge"):
            pickers.append(build_judge_tab(registry, runs / "eval"))
        with gr.Tab("Train"):
            build_train_tab(registry, runs / "app-train", preset_files(train_configs), pickers)

        def on_load():  # variants registered since the app started (a training run) show up everywhere
            return [refreshed_choices(registry) for _ in pickers]

        def on_close(request: gr.Request) -> None:  # a user who closes the tab cancels their generation
            cancellations.close_session(request.session_hash)

        demo.load(on_load, None, pickers, queue=False, api_visibility="private")
        demo.unload(on_close)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(MODELS_YAML))
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))  # Spaces: 0.0.0.0
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--runs", default=str(REPO_ROOT / "runs"), help="where eval results and app runs go")
    p.add_argument("--concurrency", type=int, default=1, help="generations at once per app (memory-bound)")
    p.add_argument("--queue-size", type=int, default=32, help="waiting requests before 'queue is full'")
    p.add_argument("--train-config", action="append", default=[], help="extra training preset (repeatable)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    registry = Registry.from_yaml(args.models)
    prefetch_hub_bases(registry)  # on a Hugging Face Space with a GPU: fetch the paper's bases
    demo = build_app(registry, Path(args.runs), [Path(c) for c in args.train_config])
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size="50mb")


if __name__ == "__main__":
    main()
