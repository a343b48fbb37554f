"""Padding-free batches: a micro-batch is one row of its examples end to end, attention kept per example.

transformers' ``DataCollatorWithFlattening`` lays the examples of a micro-batch out as one row, with positions
restarting at 0 for each and the boundaries in ``cu_seq_lens_q`` (what flash-attention's varlen kernels read).
We register an attention function ("vichat_varlen_sdpa") that runs PyTorch's causal SDPA on each example's span,
on the CPU and on CUDA alike, so no FLOP goes to a padding token and none to attention across examples (a
block-diagonal mask would spend the full (sum of lengths)^2). Without boundaries (generation, a padded probe) it
is plain SDPA with its usual mask.

Only for architectures whose attention goes through transformers' attention interface and whose positions come
from ``position_ids`` (Gemma, Llama, Qwen, Mistral...): BLOOM's ALiBi and GPT-J's attention do not, and keep
padded, length-grouped batches.
"""

from __future__ import annotations

import torch

from vichat.loading import inner_model

NAME = "vichat_varlen_sdpa"
SUPPORTED = ("gemma3_text", "gemma3", "gemma2", "gemma", "llama", "mistral", "qwen2", "qwen3")


def supports(config, max_length: int) -> bool:
    """The architecture takes the attention interface and positions, and no example outgrows a sliding window
    (each span runs as plain causal attention, which equals sliding-window attention only within the window)."""
    window = getattr(config, "sliding_window", None)
    return (
        getattr(config, "model_type", None) in SUPPORTED
        and getattr(config, "_attn_implementation", None) in ("sdpa", NAME)
        and (window is None or max_length <= window)
    )


def varlen_sdpa(
    module, query, key, value, attention_mask, *, cu_seq_lens_q=None, sliding_window=None, **kwargs
):
    """SDPA on each example's span of the flattened row (batch 1); SDPA as usual without boundaries."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    bounds = cu_seq_lens_q.tolist() if torch.is_tensor(cu_seq_lens_q) else list(cu_seq_lens_q)
    outputs = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        if sliding_window is not None and end - start > sliding_window:  # enable() keeps max_length within it
            raise ValueError(
                f"an example of {end - start} tokens is longer than the sliding window ({sliding_window})"
            )
        q, k, v = (t[:, :, start:end] for t in (query, key, value))
        out, _ = sdpa_attention_forward(module, q, k, v, None, is_causal=True, **kwargs)
        outputs.append(out)  # (1, span, heads, head_dim)
    return torch.cat(outputs, dim=1), None


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, varlen_sdpa)
    # padded inputs (probes, generation) get SDPA's usual mask
    AttentionMaskInterface.register(NAME, sdpa_mask)


def enable(model, max_length: int) -> bool:
    """Switch ``model`` (a PEFT or plain causal LM) to padding-free attention where it applies (see supports)."""
    base = inner_model(model)
    if not supports(base.config, max_length):
        return False
    register()
    base.set_attn_implementation(NAME)
    return True


def disable(model) -> None:
    base = inner_model(model)
    if getattr(base.config, "_attn_implementation", None) == NAME:
        base.set_attn_implementation("sdpa")
