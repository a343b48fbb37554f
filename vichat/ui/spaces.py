"""Running as a Hugging Face Space: with a GPU there, fetch the paper's hub bases in the background.

Spaces set ``SPACE_ID`` (and ``GRADIO_SERVER_NAME=0.0.0.0``, which app.py reads). A base that is not in the
local hub cache is listed as unavailable; on a GPU Space this downloads it once, after which its variants run
in 8-bit through the same loader (bitsandbytes on CUDA). Without a GPU nothing is fetched: a 7B base in float32
on a CPU Space would not fit, and the embedded Gemma default needs no network.
"""

from __future__ import annotations

import logging
import os
import threading

from vichat.loading import base_availability
from vichat.registry import Registry

log = logging.getLogger(__name__)
SKIP = ["*.msgpack", "*.h5", "*.ot", "flax_model*", "tf_model*", "*.onnx"]


def on_spaces() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def prefetch_hub_bases(registry: Registry) -> threading.Thread | None:
    """Download the hub bases not cached yet, in a daemon thread (only on a Space with CUDA)."""
    import torch

    if not on_spaces() or not torch.cuda.is_available():
        return None
    missing = [s for s in registry.bases.values() if s.kind == "hub" and not base_availability(s).ok]
    if not missing:
        return None

    def fetch() -> None:
        from huggingface_hub import snapshot_download

        for spec in missing:
            try:
                log.warning("fetching %s for %s (once)", spec.source, spec.key)
                snapshot_download(spec.source, ignore_patterns=SKIP)
            except Exception as e:  # offline, gated, disk full: the variant stays unavailable, said why
                log.warning("could not fetch %s: %s", spec.source, e)

    thread = threading.Thread(target=fetch, name="vichat-prefetch", daemon=True)
    thread.start()
    return thread
