"""Running as a Hugging Face Space: fetch the paper's hub bases on a GPU, and ask ZeroGPU for one per call.

Spaces set ``SPACE_ID`` (and ``GRADIO_SERVER_NAME=0.0.0.0``, which app.py reads). A base that is not in the
local hub cache is listed as unavailable; on a GPU Space this downloads it once, after which its variants run
in 8-bit through the same loader (bitsandbytes on CUDA). Without a GPU nothing is fetched: a 7B base in float32
on a CPU Space would not fit, and the embedded Gemma default needs no network.

ZeroGPU Spaces attach a GPU only while a function decorated with ``@spaces.GPU`` runs. :func:`gpu` applies
that decorator where the ``spaces`` package is importable (it is installed on Spaces, and is a no-op off
ZeroGPU) and is the identity everywhere else, so the app needs no ``spaces`` package to run locally or in CI.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from vichat.loading import base_availability
from vichat.registry import Registry

log = logging.getLogger(__name__)
SKIP = ["*.msgpack", "*.h5", "*.ot", "flax_model*", "tf_model*", "*.onnx"]
F = TypeVar("F", bound=Callable)
# Seconds of GPU a ZeroGPU call may hold (its default is 60): one answer of 256 new tokens; Compare makes two.
GPU_SECONDS = {"chat": 60, "compare": 120}


def gpu(fn: F, duration: int | None = None) -> F:
    """``spaces.GPU(fn)`` where the ``spaces`` package is importable (ZeroGPU), else ``fn`` itself."""
    try:
        import spaces
    except ImportError:
        return fn
    decorate = getattr(spaces, "GPU", None)
    if not callable(decorate):  # some other module called "spaces"
        return fn
    return decorate(fn, duration=duration) if duration else decorate(fn)


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
