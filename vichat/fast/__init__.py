"""Fast CPU decoding for local variants: a lean, batched forward pass over int8/bf16/fp32 copies of the weights.

The default for local variants on CPU (``fast: auto`` in assets/models.yaml; ``fast: off`` keeps the
reference path, transformers ``generate`` in float32). One engine per loaded base serves the bare base and
every adapter on it: the int8 matrices exist once, each adapter adds only its small LoRA matrices.

Where it does not apply (CUDA, an architecture other than Gemma 3 text, an adapter kind it cannot apply, a
torch build without the kernels) :func:`engine_for` raises :class:`FastUnsupported` with the reason, and the
registry logs it and uses the reference path.

Accuracy: int8 weights move the float32 reference's per-token log-likelihoods by 0.04-0.06 nats on average
(bound tested in tests/vichat/test_fast.py: mean <= 0.08, max <= 0.6), about as much as llama.cpp on the
same GGUF does. Greedy decoding picks the reference's token wherever its top two logits are 0.5 apart. The
LM head may instead take the two-pass int4 format (``vichat.fast.linear.Int4Linear``, where timing picks it):
int4 scores for all 262k tokens, then the best 128 scored again in float32, so the tokens top-k sampling and
greedy decoding choose among carry float32 scores (measured on Gemma 3 270M: |dlogp| of the reference's
token 0.002 on average with an int4 head, 0.035 with an int8 one; same bound tested).
"""

from __future__ import annotations

from vichat.fast.gemma import FastUnsupported, GemmaFast, inner_model, unsupported_reason
from vichat.fast.linear import PRECISIONS, kernels_missing

FAST_MODES = ("auto", "off")
DEFAULT_PRECISION = (
    "auto"  # time int8, bf16, fp32 (and int4 for the head) per matrix at start (vichat.fast.kernels)
)

__all__ = [
    "DEFAULT_PRECISION",
    "FAST_MODES",
    "PRECISIONS",
    "FastUnsupported",
    "GemmaFast",
    "engine_for",
    "why_not",
]


def why_not(base) -> str:
    """Why ``base`` (a LoadedBase) cannot use the fast path; '' when it can."""
    if base.device.type != "cpu":
        return f"the fast path is for CPU and {base.spec.key} is on {base.device}"
    return unsupported_reason(inner_model(base.model).config) or kernels_missing()


def engine_for(
    base, adapter: str | None = None, precision: str = DEFAULT_PRECISION, batch: int = 8
) -> GemmaFast:
    """The fast engine of ``base`` (built once, on first use) ready for ``adapter``; raises FastUnsupported."""
    with base.lock:
        if base.fast is None:
            reason = why_not(base)
            if reason:
                raise FastUnsupported(reason)
            base.fast = GemmaFast.from_model(base.model, precision, batch)
        base.fast.lora_pack(base.model, adapter)  # refuses an adapter it cannot apply now, not mid-stream
        return base.fast
