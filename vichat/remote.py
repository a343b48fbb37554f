"""A variant served by an OpenAI-compatible completions server (vLLM with --enable-lora, TGI, llama.cpp).

We apply the paper's template ourselves and call ``/v1/completions``, so any server that serves the base
(and, for vLLM, the LoRA by name) gives the same prompts as local generation.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import openai

from vichat.errors import VariantUnavailableError
from vichat.generation import GenerationSettings, GenerationStats, StopFilter
from vichat.prompts import cut_at_stops


class RemoteBackend:
    def __init__(self, endpoint) -> None:
        self.endpoint = endpoint
        # Servers such as vLLM accept any key; the key's value is never logged or shown.
        key = os.environ.get(endpoint.api_key_env) or "EMPTY"
        self.client = openai.OpenAI(
            base_url=endpoint.base_url, api_key=key, timeout=endpoint.timeout_s, max_retries=2
        )

    def _request(self, prompt: str, settings: GenerationSettings, stops, stream: bool):
        extra = {"top_k": settings.top_k, "repetition_penalty": settings.repetition_penalty}
        try:
            return self.client.completions.create(
                model=self.endpoint.model,
                prompt=prompt,
                max_tokens=settings.max_new_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                seed=settings.seed,
                stop=list(stops)[:4] or None,
                stream=stream,
                extra_body=extra,
            )
        except openai.APIConnectionError as e:
            raise VariantUnavailableError(
                f"endpoint {self.endpoint.base_url} cannot be reached: {e}"
            ) from None
        except openai.APIStatusError as e:
            raise VariantUnavailableError(
                f"endpoint {self.endpoint.base_url} answered HTTP {e.status_code} for model {self.endpoint.model}"
            ) from None

    def complete(self, prompt: str, settings: GenerationSettings, stops=()) -> str:
        resp = self._request(prompt, settings, stops, stream=False)
        return cut_at_stops(resp.choices[0].text, stops).strip()

    def stream(
        self,
        prompt: str,
        settings: GenerationSettings,
        stops=(),
        cancel: threading.Event | None = None,
        stats: GenerationStats | None = None,
    ) -> Iterator[str]:
        stats = stats if stats is not None else GenerationStats()
        start = time.perf_counter()
        events = self._request(prompt, settings, stops, stream=True)
        text, visible = "", StopFilter(stops)
        try:
            for event in events:
                if cancel is not None and cancel.is_set():
                    stats.stopped_by = "cancelled"
                    break
                if not event.choices:
                    continue
                choice = event.choices[0]
                piece = choice.text or ""
                if piece and stats.first_token_s is None:
                    stats.first_token_s = time.perf_counter() - start
                stats.new_tokens += 1 if piece else 0
                text += piece
                if out := visible.update(text):
                    yield out
                if visible.stopped:
                    stats.stopped_by = "stop"
                    break
                if choice.finish_reason:
                    stats.stopped_by = "length" if choice.finish_reason == "length" else "eos"
            else:
                if rest := visible.finish():
                    yield rest
        finally:
            events.close()
            stats.total_s = time.perf_counter() - start
