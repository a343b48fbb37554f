"""Records -> token ids with a response-only label mask; a collator that pads to the longest in the batch."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import torch

from vichat.data import read_jsonl_strict
from vichat.errors import DataError
from vichat.prompts import Template

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def load_records(files: list[str]) -> list[dict]:
    """Every record of ``files``; a bad line, a NaN or a lone surrogate is a DataError naming the file."""
    records: list[dict] = []
    for f in files:
        try:
            found = read_jsonl_strict(f)
        except DataError:
            raise
        except (ValueError, RecursionError) as e:  # huge integers, deep nesting: the reader's own limits
            raise DataError(
                f"{f}: cannot be read as prompt/response JSONL ({type(e).__name__}: {e})"
            ) from None
        for number, record in enumerate(found, start=1):
            try:  # what tokenizers and json.dumps refuse later: NaN/Infinity, unpaired surrogates
                json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")
            except ValueError as e:
                reason = (
                    "a lone surrogate (broken UTF-16 escape)"
                    if isinstance(e, UnicodeError)
                    else "NaN/Infinity"
                )
                raise DataError(
                    f"{f}: record {number} holds {reason}; fix it (python -m vichat.data validate {f})"
                ) from None
        records.extend(found)
    return records


def split(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded shuffle, then the last ``fraction`` held out (at least one record when fraction > 0)."""
    order = list(records)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * fraction)) if fraction > 0 else 0
    return order[: len(order) - n_val], order[len(order) - n_val :]


def encode(record: dict, tokenizer, template: Template, max_length: int, train_on_inputs: bool) -> Example:
    """Prompt (template applied) then response then EOS, so the model learns to stop."""
    prompt_ids = tokenizer(template.build(record["prompt"]), add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(record["response"].strip(), add_special_tokens=False)["input_ids"]
    response_ids = response_ids + [tokenizer.eos_token_id]
    ids = prompt_ids + response_ids
    labels = list(ids) if train_on_inputs else [IGNORE] * len(prompt_ids) + response_ids
    truncated = len(ids) > max_length
    return Example(ids[:max_length], labels[:max_length], truncated)


def encode_all(
    records: list[dict], tokenizer, template: Template, max_length: int, train_on_inputs: bool, source: str
) -> tuple[list[dict], int]:
    """Encoded features and how many were truncated; records whose prompt fills max_length are errors."""
    template_len = len(tokenizer(template.build("x"), add_special_tokens=True)["input_ids"])
    if template_len + 2 > max_length:
        raise DataError(
            f"max_length={max_length} is shorter than the template itself ({template_len} tokens)"
        )
    out, truncated = [], 0
    for r in records:
        ex = encode(r, tokenizer, template, max_length, train_on_inputs)
        if all(label == IGNORE for label in ex.labels[1:]):
            truncated += 1  # the prompt alone fills max_length: nothing left to learn from
            continue
        truncated += ex.truncated
        out.append({"input_ids": ex.input_ids, "labels": ex.labels, "length": len(ex.input_ids)})
    if not out:
        raise DataError(f"{source}: no usable examples after filtering (all empty or longer than max_length)")
    return out, truncated


@dataclass
class PadToLongest:
    """Right-pads a batch to its longest example (rounded up to ``multiple``); pad labels are ignored."""

    pad_token_id: int
    multiple: int = 8

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        width = -(-width // self.multiple) * self.multiple
        ids, labels, attn = [], [], []
        for f in features:
            pad = width - len(f["input_ids"])
            ids.append(f["input_ids"] + [self.pad_token_id] * pad)
            labels.append(f["labels"] + [IGNORE] * pad)
            attn.append([1] * len(f["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(attn),
        }
