"""A lean Gemma 3 (text) forward pass for CPU decoding, over the weights of a loaded transformers model.

What makes it fast, measured on the 2-core CPU this project targets (per generated token):
- the matrices are int8 weight-only (or bfloat16) copies: ~0.27 GB read per token instead of 1.07 GB;
- q/k/v and gate/up are fused into one matrix each: 4 matrix products per layer instead of 7;
- a preallocated KV cache and plain tensor ops, no transformers ``generate`` machinery per step.

The residual stream, norms, rotary embeddings, attention and softmax stay in float32 as in transformers;
only the inputs and outputs of the big matrix products are bfloat16.

LoRA adapters are not merged: each adapter's A and B matrices are read from the PEFT model (fused per
matrix group, the scale folded into B) and added as ``B(A x)``. The base weights exist once, whatever the
number of adapters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vichat.fast.kernels import ByRows, KernelChoice, build, choose_kernels
from vichat.fast.linear import Linear
from vichat.fast.threads import ThreadChoice
from vichat.loading import inner_model

SUPPORTED_TYPES = ("gemma3_text",)
# group -> the projections fused into it, in output order
GROUPS: dict[str, tuple[str, ...]] = {
    "qkv": ("q_proj", "k_proj", "v_proj"),
    "o": ("o_proj",),
    "gate_up": ("gate_proj", "up_proj"),
    "down": ("down_proj",),
}
_GROUP_OF = {proj: group for group, projs in GROUPS.items() for proj in projs}
_LORA_NAME = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)$")


class FastUnsupported(Exception):
    """The model or adapter has something the fast path does not implement; the reason is the message."""


def unsupported_reason(config) -> str:
    """Why this model config cannot run on the fast path ('' when it can)."""
    model_type = getattr(config, "model_type", "?")
    if model_type not in SUPPORTED_TYPES:
        return f"architecture {model_type!r} has no fast path (supported: {', '.join(SUPPORTED_TYPES)})"
    checks = {
        "attention logit soft-capping": getattr(config, "attn_logit_softcapping", None) is None,
        "bidirectional attention": not getattr(config, "use_bidirectional_attention", False),
        "attention bias": not getattr(config, "attention_bias", False),
        "activation other than gelu_pytorch_tanh": config.hidden_activation == "gelu_pytorch_tanh",
        "rope scaling": all(
            (p or {}).get("rope_type", "default") == "default" for p in config.rope_parameters.values()
        ),
    }
    missing = [name for name, ok in checks.items() if not ok]
    return f"{model_type} with {', '.join(missing)} has no fast path" if missing else ""


def _weight(module) -> torch.Tensor:
    return (module.base_layer if hasattr(module, "base_layer") else module).weight


@dataclass
class Layer:
    qkv: Linear | ByRows
    o: Linear | ByRows
    gate_up: Linear | ByRows
    down: Linear | ByRows
    norms: dict[str, torch.Tensor]  # (1 + weight) of each RMSNorm; qk: q_norm's (with the attention
    # scale) for each q head, then k_norm's for each k head
    sliding: bool


@dataclass
class Cache:
    """Keys (after norm and rotary embedding) and values of every layer, and the rotary tables."""

    keys: torch.Tensor  # (layers, kv_heads, max_len, head_dim)
    values: torch.Tensor
    cos: dict[bool, torch.Tensor]  # sliding? -> (max_len, head_dim)
    sin: dict[bool, torch.Tensor]  # sign of the first half folded in (see _rope)
    length: int = 0

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]


@dataclass
class KVPool:
    """The KV cache of a batch: one slot per sequence, rows 0..B-1 of a decode step are slots 0..B-1.

    Allocated once with ``torch.empty`` (the pages are only backed by memory as they are written). A decode
    step reads each row's own positions only (0..its length, or its sliding window), all of them written.
    """

    keys: torch.Tensor  # (layers, slots, kv_heads, capacity, head_dim)
    values: torch.Tensor
    cos: dict[bool, torch.Tensor]
    sin: dict[bool, torch.Tensor]

    @property
    def slots(self) -> int:
        return self.keys.shape[1]

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    @property
    def bytes_per_slot(self) -> int:
        return 2 * self.keys[:, 0].numel() * self.keys.element_size()

    def slot_cache(self, slot: int) -> Cache:
        """Slot ``slot`` as a single-sequence cache (a view: a prompt pass writes into the pool)."""
        return Cache(self.keys[:, slot], self.values[:, slot], self.cos, self.sin)

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` positions of slot ``src`` to slot ``dst`` (to keep rows contiguous)."""
        self.keys[:, dst, :, :length] = self.keys[:, src, :, :length]
        self.values[:, dst, :, :length] = self.values[:, src, :, :length]


# An adapter ready for the forward pass: (layer, group) -> (A stacked, B block-diagonal with the scale folded in)
LoraPack = dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class GemmaFast:
    """Gemma 3 text decoder over int8/bf16 copies of a loaded model's matrices."""

    config: object
    precision: str
    embed: torch.Tensor  # the model's own float32 embedding (shared, not copied)
    embed_scale: float
    layers: list[Layer]
    final_norm: torch.Tensor
    head: Linear | ByRows
    packs: dict[str, LoraPack] = field(default_factory=dict)
    threads: ThreadChoice = field(default_factory=ThreadChoice)  # prompts and one-row steps
    step_threads: dict[int, ThreadChoice] = field(default_factory=dict)  # steps of 2+ rows, by rows
    kernels: KernelChoice | None = None  # what "auto" timed and chose (None: one precision as asked)

    # ------------------------------------------------------------------------------------ building

    @classmethod
    def from_model(cls, model, precision: str = "int8", batch: int = 8, head: str | None = None) -> GemmaFast:
        """The engine over ``model``'s weights. ``precision`` "auto" times int8, bf16 and fp32 on this
        machine for each matrix shape (at batch 1 and ``batch``), and int4 too for the LM head, and keeps the
        fastest per shape. A fixed ``precision`` applies to every matrix, the head too unless ``head`` names
        its own format (one of HEAD_FORMATS)."""
        if precision == "int4":
            raise ValueError("int4 is a format for the LM head only: pass head='int4' with another precision")
        hf = inner_model(model)
        cfg = hf.config
        reason = unsupported_reason(cfg)
        if reason:
            raise FastUnsupported(reason)
        blocks = hf.model.layers
        kernels = None
        if precision == "auto":
            kernels = choose_kernels(_group_weights(blocks[0]) | {"head": hf.lm_head.weight}, batch)
            plans = kernels.plan
        else:
            plans = dict.fromkeys([*GROUPS, "head"], [(1, precision)])
        built = kernels.built.get("head") if kernels else None
        if head is not None:  # asked for: not what the timing chose
            plans, built = plans | {"head": [(1, head)]}, None
        layers = [_layer(block, cfg, i, plans) for i, block in enumerate(blocks)]
        embed = hf.model.embed_tokens.weight.detach()
        return cls(
            config=cfg,
            precision=kernels.summary() if kernels else precision + (f" (head {head})" if head else ""),
            embed=embed,
            embed_scale=float(hf.model.embed_tokens.embed_scale),
            layers=layers,
            final_norm=_one_plus(hf.model.norm),
            head=built or build(hf.lm_head.weight, plans["head"]),
            kernels=kernels,
        )

    @property
    def nbytes(self) -> int:
        """Bytes this engine holds beyond the model it was built from."""
        mats = [m for layer in self.layers for m in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        return sum(m.nbytes for m in mats) + self.head.nbytes

    def new_cache(self, max_len: int) -> Cache:
        cfg = self.config
        shape = (len(self.layers), cfg.num_key_value_heads, max_len, cfg.head_dim)
        cos, sin = {}, {}
        for sliding in (False, True):
            kind = "sliding_attention" if sliding else "full_attention"
            cos[sliding], sin[sliding] = _rope_tables(cfg.rope_parameters[kind]["rope_theta"], cfg, max_len)
        return Cache(torch.empty(shape), torch.empty(shape), cos, sin)  # only written slots are read

    def new_pool(self, slots: int, capacity: int) -> KVPool:
        """A KV pool for ``slots`` sequences of up to ``capacity`` tokens each (see :class:`KVPool`)."""
        cfg = self.config
        shape = (len(self.layers), slots, cfg.num_key_value_heads, capacity, cfg.head_dim)
        cos, sin = {}, {}
        for sliding in (False, True):
            kind = "sliding_attention" if sliding else "full_attention"
            cos[sliding], sin[sliding] = _rope_tables(cfg.rope_parameters[kind]["rope_theta"], cfg, capacity)
        return KVPool(torch.empty(shape), torch.empty(shape), cos, sin)

    def threads_for(self, rows: int) -> ThreadChoice:
        """The thread setting of decode steps with ``rows`` rows. Each batch size is timed on its own: a
        step's time depends on its rows, so timings of different sizes cannot choose between settings."""
        if rows == 1:
            return self.threads
        if rows not in self.step_threads:  # the same most as the first (the count now may be a choice's)
            self.step_threads[rows] = ThreadChoice(most=self.threads.most, idle_cores=self.threads.idle_cores)
        return self.step_threads[rows]

    def kv_bytes_per_token(self) -> int:
        cfg = self.config
        return 2 * 4 * len(self.layers) * cfg.num_key_value_heads * cfg.head_dim

    # -------------------------------------------------------------------------------------- adapters

    def lora_pack(self, model, adapter: str | None) -> LoraPack:
        """The fused LoRA matrices of ``adapter`` on ``model`` (a PEFT model); empty for the bare base."""
        if adapter is None:
            return {}
        if adapter not in self.packs:
            self.packs[adapter] = _build_pack(model, adapter, self.config)
        return self.packs[adapter]

    # --------------------------------------------------------------------------------------- forward

    @torch.inference_mode()
    def forward(self, ids: list[int], cache: Cache, lora: LoraPack) -> torch.Tensor:
        """Run ``ids`` (the next tokens) through the model, extend ``cache``; float32 logits of the last one."""
        cfg = self.config
        t, pos = len(ids), cache.length
        if pos + t > cache.capacity:
            raise ValueError(f"KV cache holds {cache.capacity} tokens; {pos + t} needed")
        h = F.embedding(torch.tensor(ids), self.embed) * self.embed_scale
        masks = _masks(t, pos, cfg.sliding_window) if t > 1 else {}
        for i, layer in enumerate(self.layers):
            h = self._layer(i, layer, h, cache, lora, masks)
        cache.length = pos + t
        x = F.rms_norm(h[-1:], (cfg.hidden_size,), self.final_norm, cfg.rms_norm_eps)
        logits = self.head(x.to(self.head.dtype)).float()[0]
        cap = cfg.final_logit_softcapping
        return torch.tanh(logits / cap) * cap if cap else logits

    @torch.inference_mode()
    def decode_step(
        self,
        tokens: list[int],
        lengths: list[int],
        pool: KVPool,
        loras: list[tuple[LoraPack, slice | torch.Tensor | None]],
    ) -> torch.Tensor:
        """One token for each of B sequences at once; float32 logits (B, vocab).

        Row b is pool slot b, holds ``lengths[b]`` tokens already and takes ``tokens[b]`` next. ``loras``
        groups the rows by adapter: (pack, a slice of rows, row indices, or None for every row); rows in no
        group run the bare base. The big matrices read their weights once for the whole batch.
        """
        cfg = self.config
        pos = torch.tensor(lengths)
        if max(lengths) + 1 > pool.capacity:
            raise ValueError(f"KV pool holds {pool.capacity} tokens per sequence; {max(lengths) + 1} needed")
        rope = {s: (pool.cos[s][pos][:, None], pool.sin[s][pos][:, None]) for s in (False, True)}
        h = F.embedding(torch.tensor(tokens), self.embed) * self.embed_scale
        for i, layer in enumerate(self.layers):
            h = self._batch_layer(i, layer, h, pool, pos, lengths, loras, rope[layer.sliding])
        x = F.rms_norm(h, (cfg.hidden_size,), self.final_norm, cfg.rms_norm_eps)
        logits = self.head(x.to(self.head.dtype)).float()
        cap = cfg.final_logit_softcapping
        return torch.tanh(logits / cap) * cap if cap else logits

    def _batch_layer(
        self, i, layer: Layer, h, pool: KVPool, pos, lengths: list[int], loras, rope
    ) -> torch.Tensor:
        cfg = self.config
        eps, dim, hd = cfg.rms_norm_eps, cfg.hidden_size, cfg.head_dim
        n_q, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        rows = h.shape[0]
        norms = layer.norms
        cos, sin = rope

        x = F.rms_norm(h, (dim,), norms["input"], eps)
        qkv = _project_rows(layer.qkv, x, loras, (i, "qkv"))
        qk, v = qkv.view(rows, n_q + 2 * n_kv, hd).split((n_q + n_kv, n_kv), dim=1)
        qk = F.rms_norm(qk, (hd,), None, eps) * norms["qk"]  # q and k heads normed and rotated at once
        qk = qk * cos + qk.roll(hd // 2, dims=-1) * sin
        q, k = qk.split((n_q, n_kv), dim=1)
        slots = torch.arange(rows)
        pool.keys[i, slots, :, pos] = k
        pool.values[i, slots, :, pos] = v
        qh = q.view(rows, n_kv, n_q // n_kv, hd)
        attn = torch.empty(rows, n_kv, n_q // n_kv, hd)
        # Each row over its own positions only, not over the batch's longest padded and masked: a softmax and
        # a product over more (zero-weighted) positions sum in another order, and a row's bits must not
        # depend on the lengths of the rows beside it.
        for b, p in enumerate(lengths):
            start = max(0, p + 1 - cfg.sliding_window) if layer.sliding else 0
            keys = pool.keys[i, b, :, start : p + 1]  # (kv, L, hd)
            scores = torch.matmul(qh[b], keys.transpose(-1, -2))  # (kv, rep, L); the scale is in the q norm
            attn[b] = torch.matmul(torch.softmax(scores, dim=-1), pool.values[i, b, :, start : p + 1])
        o = _project_rows(layer.o, attn.reshape(rows, n_q * hd), loras, (i, "o"))
        h = h + F.rms_norm(o, (dim,), norms["post_attention"], eps)

        x = F.rms_norm(h, (dim,), norms["pre_feedforward"], eps)
        gate, up = _project_rows(layer.gate_up, x, loras, (i, "gate_up")).chunk(2, dim=-1)
        down = _project_rows(layer.down, F.gelu(gate, approximate="tanh") * up, loras, (i, "down"))
        return h + F.rms_norm(down, (dim,), norms["post_feedforward"], eps)

    def _layer(self, i: int, layer: Layer, h, cache: Cache, lora: LoraPack, masks) -> torch.Tensor:
        cfg = self.config
        eps, dim, hd = cfg.rms_norm_eps, cfg.hidden_size, cfg.head_dim
        n_q, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        t, pos = h.shape[0], cache.length
        norms = layer.norms

        x = F.rms_norm(h, (dim,), norms["input"], eps)
        qkv = _project(layer.qkv, x, lora.get((i, "qkv")))
        qk, v = qkv.view(t, n_q + 2 * n_kv, hd).split((n_q + n_kv, n_kv), dim=1)
        qk = _rope(F.rms_norm(qk, (hd,), None, eps) * norms["qk"], cache, layer.sliding, pos, t)
        q, k = qk.split((n_q, n_kv), dim=1)
        cache.keys[i, :, pos : pos + t] = k.transpose(0, 1)
        cache.values[i, :, pos : pos + t] = v.transpose(0, 1)
        attn = _attend(q, cache, i, pos + t, masks.get(layer.sliding), cfg.sliding_window, layer.sliding)
        o = _project(layer.o, attn.reshape(t, n_q * hd), lora.get((i, "o")))
        h = h + F.rms_norm(o, (dim,), norms["post_attention"], eps)

        x = F.rms_norm(h, (dim,), norms["pre_feedforward"], eps)
        gate, up = _project(layer.gate_up, x, lora.get((i, "gate_up"))).chunk(2, dim=-1)
        down = _project(layer.down, F.gelu(gate, approximate="tanh") * up, lora.get((i, "down")))
        return h + F.rms_norm(down, (dim,), norms["post_feedforward"], eps)


# ------------------------------------------------------------------------------------------- pieces


def _one_plus(norm) -> torch.Tensor:
    return 1.0 + norm.weight.detach().float()


def _group_weights(block) -> dict[str, torch.Tensor]:
    """The fused matrix of each group of one decoder layer."""
    attn, mlp = block.self_attn, block.mlp
    return {
        "qkv": torch.cat([_weight(attn.q_proj), _weight(attn.k_proj), _weight(attn.v_proj)]),
        "o": _weight(attn.o_proj),
        "gate_up": torch.cat([_weight(mlp.gate_proj), _weight(mlp.up_proj)]),
        "down": _weight(mlp.down_proj),
    }


def _layer(block, cfg, index: int, plans: dict[str, list[tuple[int, str]]]) -> Layer:
    attn = block.self_attn
    weights = _group_weights(block)
    norms = {
        "input": _one_plus(block.input_layernorm),
        # one row per q head, then per k head: the attention scale folded into q's
        "qk": torch.cat(
            [
                (_one_plus(attn.q_norm) * cfg.query_pre_attn_scalar**-0.5).expand(
                    cfg.num_attention_heads, -1
                ),
                _one_plus(attn.k_norm).expand(cfg.num_key_value_heads, -1),
            ]
        ),
        "post_attention": _one_plus(block.post_attention_layernorm),
        "pre_feedforward": _one_plus(block.pre_feedforward_layernorm),
        "post_feedforward": _one_plus(block.post_feedforward_layernorm),
    }
    built = {group: build(weights[group], plans[group]) for group in GROUPS}
    return Layer(
        **built,
        norms=norms,
        sliding=cfg.layer_types[index] == "sliding_attention",
    )


def _project(linear, x: torch.Tensor, lora) -> torch.Tensor:
    """float32 in and out; the matrix sees ``x`` in its own dtype, the LoRA term is added in float32."""
    out = linear(x.to(linear.dtype)).float()
    if lora is not None:
        a, b = lora
        out.addmm_(F.linear(x, a), b.T)
    return out


def _project_rows(linear, x: torch.Tensor, loras, key) -> torch.Tensor:
    """:func:`_project` for a decode step, whose rows may have different adapters (grouped: one product per
    adapter). Each row's LoRA term is computed on its own (:func:`_lora_rows`), so it is the same bits
    whatever rows decode beside it."""
    out = linear(x.to(linear.dtype)).float()
    for pack, rows in loras:
        ab = pack.get(key)
        if ab is None:
            continue
        if rows is None:
            out += _lora_rows(x, *ab)
        else:  # a slice (side by side: a view, no gather or scatter) or row indices
            out[rows] += _lora_rows(x[rows], *ab)
    return out


def _lora_rows(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``B(A x)`` for each row of ``x`` as a batch of one-row products (``bmm``). A float32 product over the
    rows (``F.linear``, ``addmm``) gives a row other bits inside 2+ rows than alone (by ~2e-7, measured on
    Sapphire Rapids); a batch of one-row products does not (tests/vichat/test_fast.py checks it)."""
    rows = x.shape[0]
    h = torch.bmm(x[:, None, :], a.T.expand(rows, -1, -1))
    return torch.bmm(h, b.T.expand(rows, -1, -1))[:, 0]


def _rope_tables(theta: float, cfg, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin, computed as transformers does (float32 positions times inverse frequencies)."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = torch.arange(max_len).float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    sin = emb.sin()
    sin[:, : dim // 2] *= -1  # rotate_half(x) * sin == roll(x, dim/2) * signed sin
    return emb.cos(), sin


def _rope(x: torch.Tensor, cache: Cache, sliding: bool, pos: int, t: int) -> torch.Tensor:
    cos = cache.cos[sliding][pos : pos + t, None]
    sin = cache.sin[sliding][pos : pos + t, None]
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin


def _masks(t: int, pos: int, window: int) -> dict[bool, torch.Tensor]:
    """Additive masks for ``t`` new tokens after ``pos`` cached ones: causal, and causal within the window."""
    q = torch.arange(pos, pos + t)[:, None]
    kv = torch.arange(pos + t)[None, :]
    causal = kv <= q
    neg = torch.finfo(torch.float32).min
    full = torch.zeros(causal.shape).masked_fill_(~causal, neg)
    sliding = torch.zeros(causal.shape).masked_fill_(~(causal & (kv > q - window)), neg)
    return {False: full, True: sliding}


def _attend(q, cache: Cache, i: int, end: int, mask, window: int, sliding: bool) -> torch.Tensor:
    """Grouped-query attention of ``q`` (t, heads, dim) over the cache up to ``end``; (t, heads, dim)."""
    t, n_q, hd = q.shape
    start = max(0, end - window) if (sliding and mask is None) else 0
    keys = cache.keys[i, :, start:end]  # (kv, L, hd)
    values = cache.values[i, :, start:end]
    n_kv = keys.shape[0]
    rep = n_q // n_kv
    qh = q.view(t, n_kv, rep, hd).permute(1, 2, 0, 3).reshape(n_kv, rep * t, hd)
    scores = torch.bmm(qh, keys.transpose(1, 2))  # (kv, rep*t, L); the scale is in the q norm
    if mask is not None:
        scores = scores + mask.repeat(rep, 1)
    out = torch.bmm(torch.softmax(scores, dim=-1), values)  # (kv, rep*t, hd)
    return out.view(n_kv, rep, t, hd).permute(2, 0, 1, 3)


def _build_pack(model, adapter: str, cfg) -> LoraPack:
    """Collect ``adapter``'s LoRA matrices per (layer, group); refuse what the fast path cannot apply."""
    found: dict[tuple[int, str], dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or adapter not in lora_a:
            continue
        match = _LORA_NAME.search(name)
        if not match or match.group(2) not in _GROUP_OF:
            raise FastUnsupported(f"adapter {adapter!r} targets {name}, which the fast path does not patch")
        if getattr(module, "use_dora", {}).get(adapter):
            raise FastUnsupported(f"adapter {adapter!r} uses DoRA")
        if not isinstance(lora_a[adapter], torch.nn.Linear) or module.lora_B[adapter].bias is not None:
            raise FastUnsupported(f"adapter {adapter!r} has a LoRA layer kind the fast path does not apply")
        a = lora_a[adapter].weight.detach().float()
        b = module.lora_B[adapter].weight.detach().float() * float(module.scaling[adapter])
        layer, proj = int(match.group(1)), match.group(2)
        found.setdefault((layer, _GROUP_OF[proj]), {})[proj] = (a, b)
    if not found:
        raise FastUnsupported(f"adapter {adapter!r} has no LoRA weights on this model")
    return {key: _fuse(key[1], parts, cfg) for key, parts in found.items()}


def _fuse(group: str, parts: dict[str, tuple[torch.Tensor, torch.Tensor]], cfg) -> tuple:
    """Stack the A matrices; place each B in its rows of the fused output (block-diagonal in rank)."""
    sizes = _group_sizes(group, cfg)
    a = torch.cat([parts[p][0] for p in GROUPS[group] if p in parts])
    b = torch.zeros(sum(sizes.values()), a.shape[0])
    row, col = 0, 0
    for proj in GROUPS[group]:
        if proj in parts:
            part = parts[proj][1]
            b[row : row + part.shape[0], col : col + part.shape[1]] = part
            col += part.shape[1]
        row += sizes[proj]
    return a.contiguous(), b


def _group_sizes(group: str, cfg) -> dict[str, int]:
    hd = cfg.head_dim
    sizes = {
        "q_proj": cfg.num_attention_heads * hd,
        "k_proj": cfg.num_key_value_heads * hd,
        "v_proj": cfg.num_key_value_heads * hd,
        "o_proj": cfg.hidden_size,
        "gate_proj": cfg.intermediate_size,
        "up_proj": cfg.intermediate_size,
        "down_proj": cfg.hidden_size,
    }
    return {p: sizes[p] for p in GROUPS[group]}
