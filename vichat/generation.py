"""Generation: the paper's decoding settings, streaming, batches and the likelihood of references.

Functions here take a ready model and tokenizer; which adapter is active is the registry's business.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from vichat.errors import PromptError, SettingsError
from vichat.prompts import cut_at_stops, held_back

# (low, high) inclusive ranges for each setting; None means unbounded on that side.
RANGES: dict[str, tuple[float, float]] = {
    "max_new_tokens": (1, 2048),
    "temperature": (0.0, 2.0),
    "top_k": (0, 1000),
    "top_p": (0.01, 1.0),
    "repetition_penalty": (1.0, 2.0),
}


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings. Defaults are the paper's: 256 new tokens, temperature 0.5, top-k 20, penalty 1.2.

    temperature 0 means greedy decoding; ``seed`` makes sampling reproducible.
    """

    max_new_tokens: int = 256
    temperature: float = 0.5
    top_k: int = 20
    top_p: float = 1.0
    repetition_penalty: float = 1.2
    seed: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "seed":
                if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                    raise SettingsError(f"seed must be a whole number >= 0 or empty, got {value!r}")
                continue
            low, high = RANGES[f.name]
            integral = f.name in ("max_new_tokens", "top_k")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SettingsError(f"{f.name} must be a number in [{low}, {high}], got {value!r}")
            if integral and value != int(value):
                raise SettingsError(f"{f.name} must be a whole number in [{low}, {high}], got {value!r}")
            if not (low <= value <= high):
                raise SettingsError(f"{f.name} must be in [{low}, {high}], got {value!r}")
            if integral:
                object.__setattr__(self, f.name, int(value))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def with_(self, **changes) -> GenerationSettings:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    def hf_kwargs(self) -> dict:
        kw = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.greedy:
            kw.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        else:
            kw.update(
                do_sample=True, temperature=self.temperature, top_k=self.top_k or None, top_p=self.top_p
            )
        return kw


@dataclass
class GenerationStats:
    """Filled in by :func:`stream`: time to first token, tokens generated, total seconds."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    first_token_s: float | None = None
    total_s: float = 0.0
    stopped_by: str = ""  # "eos", "stop", "length", "cancelled"

    @property
    def tokens_per_s(self) -> float:
        decode_s = self.total_s - (self.first_token_s or 0.0)
        return (self.new_tokens - 1) / decode_s if self.new_tokens > 1 and decode_s > 0 else 0.0


def context_length(model) -> int:
    cfg = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048  # ALiBi models such as BLOOM have no fixed limit; this is what they were trained on


def ensure_pad_token(tokenizer) -> None:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def encode_prompt(tokenizer, model, prompt: str, max_new_tokens: int) -> list[int]:
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    limit = context_length(model)
    if len(ids) + max_new_tokens > limit:
        raise PromptError(
            f"the prompt is {len(ids):,} tokens; with max_new_tokens={max_new_tokens} this model takes at "
            f"most {limit - max_new_tokens:,} prompt tokens (context {limit:,}). Shorten the prompt."
        )
    return ids


class StopFilter:
    """The visible part of a growing generated text, released piece by piece.

    Text after a stop marker is never shown; text that may be the start of one is held back until it is
    clearly not. ``stopped`` turns true once a marker appeared (generation should end there).
    """

    def __init__(self, stops=()) -> None:
        self.stops = tuple(stops)
        self.text = ""
        self.shown = 0
        self.stopped = False

    def update(self, text: str) -> str:
        """Take the whole text generated so far; return the newly safe piece ('' if none)."""
        self.text = text
        visible = cut_at_stops(text, self.stops)
        if len(visible) < len(text):
            self.stopped = True
            return self._release(len(visible))
        return self._release(len(text) - held_back(text, self.stops))

    def finish(self) -> str:
        """The rest when generation ended (trailing whitespace dropped)."""
        rest = cut_at_stops(self.text, self.stops).rstrip()
        return rest[self.shown :] if len(rest) > self.shown else ""

    def _release(self, upto: int) -> str:
        if upto <= self.shown:
            return ""
        piece = self.text[self.shown : upto]
        self.shown = upto
        return piece


class _StopOnText(StoppingCriteria):
    """Stops each sequence at a stop marker in its new text, or all of them when ``cancel`` is set."""

    def __init__(self, tokenizer, prompt_len: int, stops, cancel: threading.Event | None):
        self.tokenizer, self.prompt_len, self.stops, self.cancel = tokenizer, prompt_len, list(stops), cancel
        self.hit_stop = False

    def __call__(self, input_ids, scores, **kwargs):
        if self.cancel is not None and self.cancel.is_set():
            return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        done = []
        for row in input_ids:
            tail = self.tokenizer.decode(row[self.prompt_len :][-24:], skip_special_tokens=True)
            done.append(any(s in tail for s in self.stops))
        self.hit_stop = self.hit_stop or any(done)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _seed(settings: GenerationSettings) -> None:
    if settings.seed is not None:
        torch.manual_seed(settings.seed)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def generate_batch(model, tokenizer, prompts: list[str], settings: GenerationSettings, stops=()) -> list[str]:
    """Responses for several prompts at once (left padding); each cut at the template's stop markers."""
    if not prompts:
        return []
    ensure_pad_token(tokenizer)
    encoded = [encode_prompt(tokenizer, model, p, settings.max_new_tokens) for p in prompts]
    width = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded])
    attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
    device = model_device(model)
    _seed(settings)
    out = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        pad_token_id=pad,
        stopping_criteria=StoppingCriteriaList([_StopOnText(tokenizer, width, stops, None)]),
        **settings.hf_kwargs(),
    )
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return [cut_at_stops(t, stops).strip() for t in texts]


def stream(
    model,
    tokenizer,
    prompt: str,
    settings: GenerationSettings,
    stops=(),
    cancel: threading.Event | None = None,
    stats: GenerationStats | None = None,
) -> Iterator[str]:
    """Yield the response text piece by piece as it is generated.

    Text that may be the start of a stop marker is held back until it is clearly not one. Setting ``cancel``
    (or closing the iterator) stops generation within one token.
    """
    ensure_pad_token(tokenizer)
    stats = stats if stats is not None else GenerationStats()
    ids = encode_prompt(tokenizer, model, prompt, settings.max_new_tokens)
    stats.prompt_tokens = len(ids)
    cancel = cancel or threading.Event()
    device = model_device(model)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    stopper = _StopOnText(tokenizer, len(ids), stops, cancel)
    result: dict = {}

    def run() -> None:
        try:
            with torch.inference_mode():
                _seed(settings)
                out = model.generate(
                    input_ids=torch.tensor([ids], device=device),
                    attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
                    pad_token_id=tokenizer.pad_token_id,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([stopper]),
                    **settings.hf_kwargs(),
                )
            result["new_ids"] = out[0, len(ids) :].tolist()
        except BaseException as e:  # surfaced in the consumer's thread below
            result["error"] = e
            streamer.on_finalized_text("", stream_end=True)

    start = time.perf_counter()
    worker = threading.Thread(target=run, name="vichat-generate", daemon=True)
    worker.start()
    visible = StopFilter(stops)
    finished = False
    try:
        for piece in streamer:
            if stats.first_token_s is None:
                stats.first_token_s = time.perf_counter() - start
            safe = visible.update(visible.text + piece)
            if safe:
                yield safe
            if visible.stopped:  # a stop marker appeared: shown up to it; finish
                finished = True
                cancel.set()
                break
        else:
            rest = visible.finish()
            if rest:
                yield rest
            finished = True
    finally:
        if not finished:  # the consumer stopped early (closed the iterator): stop generating
            cancel.set()
        worker.join()
        stats.total_s = time.perf_counter() - start
        new_ids = result.get("new_ids", [])
        stats.new_tokens = len(new_ids)
        eos = model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        if visible.stopped or stopper.hit_stop:
            stats.stopped_by = "stop"
        elif new_ids and new_ids[-1] in eos:
            stats.stopped_by = "eos"
        elif cancel.is_set():
            stats.stopped_by = "cancelled"
        else:
            stats.stopped_by = "length"
    if "error" in result:
        raise result["error"]


@torch.inference_mode()
def response_nll(
    model, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 4
) -> list[float]:
    """Mean negative log-likelihood per token of each response (then EOS) given its prompt."""
    ensure_pad_token(tokenizer)
    device = model_device(model)
    out: list[float] = []
    for i in range(0, len(prompts), batch_size):
        rows, masks = [], []
        for p, r in zip(prompts[i : i + batch_size], responses[i : i + batch_size], strict=True):
            p_ids = tokenizer(p, add_special_tokens=True)["input_ids"]
            r_ids = tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            rows.append(p_ids + r_ids)
            masks.append([0] * len(p_ids) + [1] * len(r_ids))
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows], device=device)
        attn = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        loss_mask = torch.tensor([m + [0] * (width - len(m)) for m in masks], device=device)
        logits = model(input_ids=ids, attention_mask=attn).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        m = loss_mask[:, 1:].float()
        out.extend(((-logp * m).sum(1) / m.sum(1)).tolist())
    return out
