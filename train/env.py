"""The environment a training subprocess gets: what it needs to run, never the parent's secrets.

The app's Train tab starts ``python -m train.lora`` in a subprocess. Inheriting ``os.environ`` whole would
hand it every API key and token the server holds, and a training run needs none of them (it loads local
or public weights; ``HF_HUB_OFFLINE``/``HF_HOME`` say where). So the child gets an allow-list (paths,
locale, ViChat's own settings, thread counts, Hugging Face cache location, CUDA device selection), and any
name that looks like a credential is dropped even when it matches the allow-list (``VICHAT_API_KEY``,
``HF_TOKEN``). Imports nothing heavy: the app calls it on every run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

SECRET_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "COOKIE", "SESSION")
SECRET_NAMES = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "WANDB_API_KEY", "PGPASS"})

KEEP_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
        "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONIOENCODING", "PYTHONUTF8",
        "VIRTUAL_ENV", "CONDA_PREFIX", "LD_LIBRARY_PATH", "SYSTEMROOT",
        "HF_HOME", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_DATASETS_OFFLINE", "HF_DATASETS_CACHE",
        "TRANSFORMERS_OFFLINE", "TRANSFORMERS_CACHE", "HF_HUB_DISABLE_TELEMETRY", "TOKENIZERS_PARALLELISM",
        "XDG_CACHE_HOME", "TORCH_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR",
        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS", "KMP_AFFINITY", "KMP_BLOCKTIME",
        "MPLBACKEND", "MPLCONFIGDIR",
    }
)  # fmt: skip
KEEP_PREFIXES = ("VICHAT_", "LC_", "CUDA_", "NVIDIA_", "OMP_", "MKL_", "KMP_", "PYTORCH_", "NCCL_")
NOT_SECRETS = frozenset({"TOKENIZERS_PARALLELISM"})  # allow-listed names that only look like one


def is_secret(name: str) -> bool:
    """A variable whose name says it holds a credential (``*_API_KEY``, ``*TOKEN*``, ``DB_PASSWORD``, ...)."""
    upper = name.upper()
    if upper in NOT_SECRETS:
        return False
    return upper in SECRET_NAMES or any(part in upper for part in SECRET_PARTS)


def kept(name: str) -> bool:
    """On the allow-list of what a training run needs."""
    upper = name.upper()
    return upper in KEEP_NAMES or upper.startswith(KEEP_PREFIXES)


def scrubbed_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default ``os.environ``) for a training subprocess: allow-listed, secrets removed."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if kept(k) and not is_secret(k)}
