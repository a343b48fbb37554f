"""ViChat: chat with Vietnamese chatbots built from open LLMs (arXiv 2309.04646, reproduced).

python app.py [--models assets/models.yaml] [--host 127.0.0.1] [--port 7860]
"""

from __future__ import annotations

import argparse
import os

import gradio as gr

from vichat.paths import MODELS_YAML
from vichat.registry import Registry
from vichat.ui.chat import build_chat_tab
from vichat.ui.common import Cancellations


def build_app(registry: Registry) -> gr.Blocks:
    cancellations = Cancellations()
    with gr.Blocks(title="ViChat") as demo:
        gr.Markdown("# ViChat\nVietnamese chatbots from open LLMs with LoRA (reproducing arXiv 2309.04646).")
        with gr.Tab("Chat"):
            build_chat_tab(registry, cancellations)

        def on_close(request: gr.Request) -> None:  # a user who closes the tab cancels their generation
            cancellations.cancel(request.session_hash)

        demo.unload(on_close)
    return demo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", default=str(MODELS_YAML))
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--concurrency", type=int, default=1, help="generations at once per app (memory-bound)")
    args = p.parse_args()
    registry = Registry.from_yaml(args.models)
    demo = build_app(registry)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=32)
    demo.launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
