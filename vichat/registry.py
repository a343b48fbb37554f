"""The variant registry: names -> (base, adapter, template, backend), read from assets/models.yaml.

One :class:`Registry` owns every loaded model. The app's tabs, the CLIs and evaluation receive it; nothing
reaches for a global. Bases load lazily on first use; all variants of a base share one copy of its weights.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vichat import fast, generation
from vichat.errors import UnknownVariantError, VariantUnavailableError, ViChatError
from vichat.generation import GenerationSettings, GenerationStats
from vichat.loading import (
    Availability,
    BaseSpec,
    LoadedBase,
    adapter_availability,
    adapter_folder,
    base_availability,
    load_base,
)
from vichat.paths import MODELS_YAML
from vichat.prompts import Template, get_template, template_names

log = logging.getLogger(__name__)

BACKENDS = ("local", "openai")


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible completions server serving this variant."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 120.0


@dataclass(frozen=True)
class Variant:
    name: str
    base: str
    template: str = "chat"
    adapter: str | None = None
    backend: str = "local"
    description: str = ""
    endpoint: Endpoint | None = None
    # local on CPU: "auto" runs the fast int8 decoder (vichat.fast) where it applies; "off": transformers
    fast: str = "auto"

    @property
    def is_tuned(self) -> bool:
        return self.adapter is not None or (self.endpoint is not None and self.base != self.endpoint.model)


def _parse(data: dict, source: str) -> tuple[dict[str, BaseSpec], list[Variant]]:
    if not isinstance(data, dict) or "variants" not in data:
        raise ViChatError(f"{source}: expected keys 'bases' and 'variants'")
    bases: dict[str, BaseSpec] = {}
    for key, b in (data.get("bases") or {}).items():
        unknown = set(b) - {"source", "load_in_8bit", "description"}
        if unknown or "source" not in b:
            raise ViChatError(
                f"{source}: base {key!r} needs 'source' and takes only source, load_in_8bit, "
                f"description (unknown: {', '.join(sorted(unknown)) or '-'})"
            )
        bases[key] = BaseSpec(
            key, str(b["source"]), bool(b.get("load_in_8bit", False)), b.get("description", "")
        )
    variants: list[Variant] = []
    allowed = {"name", "base", "template", "adapter", "backend", "description", "endpoint", "fast"}
    for i, v in enumerate(data["variants"]):
        unknown = set(v) - allowed
        if unknown:
            raise ViChatError(f"{source}: variant #{i + 1} has unknown keys: {', '.join(sorted(unknown))}")
        if "name" not in v or "base" not in v:
            raise ViChatError(f"{source}: variant #{i + 1} needs 'name' and 'base'")
        backend = v.get("backend", "local")
        if backend not in BACKENDS:
            raise ViChatError(
                f"{source}: variant {v['name']!r}: backend must be one of {', '.join(BACKENDS)}"
            )
        endpoint = Endpoint(**v["endpoint"]) if v.get("endpoint") else None
        if backend == "openai" and endpoint is None:
            raise ViChatError(f"{source}: variant {v['name']!r} uses backend openai but has no endpoint")
        if backend == "local" and v["base"] not in bases:
            raise ViChatError(f"{source}: variant {v['name']!r} names unknown base {v['base']!r}")
        template = v.get("template", "chat")
        if template not in template_names():
            raise ViChatError(f"{source}: variant {v['name']!r}: unknown template {template!r}")
        mode = str(v.get("fast", "auto")).lower()
        if mode not in fast.FAST_MODES:
            raise ViChatError(
                f"{source}: variant {v['name']!r}: fast must be one of {', '.join(fast.FAST_MODES)}"
            )
        variants.append(
            Variant(
                v["name"],
                v["base"],
                template,
                v.get("adapter"),
                backend,
                v.get("description", ""),
                endpoint,
                mode,
            )
        )
    names = [v.name for v in variants]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ViChatError(f"{source}: duplicate variant names: {', '.join(sorted(dupes))}")
    return bases, variants


@dataclass
class Registry:
    bases: dict[str, BaseSpec]
    variants: dict[str, Variant]
    device: str | None = None
    progress: object = print
    _loaded: dict[str, LoadedBase] = field(default_factory=dict, repr=False)
    _load_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _fast_notes: dict[str, str] = field(default_factory=dict, repr=False)  # variant -> why not fast

    # ------------------------------------------------------------------------------------ construction

    @classmethod
    def from_yaml(cls, path: str | Path = MODELS_YAML, **kwargs) -> Registry:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise ViChatError(f"cannot read the variant file {path}: {e}") from e
        bases, variants = _parse(data, str(path))
        return cls(bases, {v.name: v for v in variants}, **kwargs)

    def add_variant(self, variant: Variant) -> None:
        """Register a variant at run time (e.g. an adapter the app just trained)."""
        if variant.backend == "local" and variant.base not in self.bases:
            raise ViChatError(f"unknown base {variant.base!r}; known: {', '.join(self.bases)}")
        self.variants[variant.name] = variant

    # -------------------------------------------------------------------------------------- look-ups

    def names(self) -> list[str]:
        return list(self.variants)

    def variant(self, name: str) -> Variant:
        try:
            return self.variants[name]
        except KeyError:
            raise UnknownVariantError(
                f"unknown variant {name!r}; known: {', '.join(self.variants)}"
            ) from None

    def template(self, name: str) -> Template:
        return get_template(self.variant(name).template)

    def availability(self, name: str) -> Availability:
        v = self.variant(name)
        if v.backend == "openai":
            return Availability(True, f"remote endpoint {v.endpoint.base_url} ({v.endpoint.model})")
        base = base_availability(self.bases[v.base])
        if not base.ok:
            return base
        if v.adapter:
            return adapter_availability(v.adapter)
        return base

    def available_names(self) -> list[str]:
        return [n for n in self.variants if self.availability(n).ok]

    def siblings(self, name: str) -> list[str]:
        """Variants sharing this variant's base (for compare: base vs tuned)."""
        base = self.variant(name).base
        return [n for n, v in self.variants.items() if v.base == base]

    # ---------------------------------------------------------------------------------------- loading

    def loaded_base(self, key: str) -> LoadedBase:
        with self._load_lock:
            if key not in self._loaded:
                self._loaded[key] = load_base(self.bases[key], self.device, progress=self.progress)
            return self._loaded[key]

    def prepare(self, name: str) -> tuple[LoadedBase, str | None]:
        """Load what ``name`` needs: its base (once per base) and its adapter onto that base."""
        v = self.variant(name)
        if v.backend != "local":
            raise ViChatError(f"variant {name!r} is served remotely, not loaded here")
        if v.adapter:
            check = adapter_availability(v.adapter)
            if not check.ok and not check.reason.startswith("adapter " + v.adapter + " is not downloaded"):
                raise VariantUnavailableError(f"{name}: {check.reason}")
        base = self.loaded_base(v.base)
        if v.adapter is None:
            return base, None
        base.add_adapter(name, adapter_folder(v.adapter))
        return base, name

    def loaded(self) -> dict[str, LoadedBase]:
        return dict(self._loaded)

    def fast_engine(self, name: str, base: LoadedBase, adapter: str | None) -> fast.GemmaFast | None:
        """The fast CPU engine for a prepared variant, or None (reference path; the reason logged once)."""
        if self.variant(name).fast == "off":
            return None
        try:
            return fast.engine_for(base, adapter)
        except fast.FastUnsupported as e:
            if self._fast_notes.get(name) != str(e):
                self._fast_notes[name] = str(e)
                log.warning("%s: %s; using transformers generate instead of the fast path", name, e)
            return None

    def fast_note(self, name: str) -> str:
        """Why ``name`` last fell back from the fast path ('' if it did not, or has not run yet)."""
        return self._fast_notes.get(name, "")

    def _remote(self, v: Variant):
        from vichat.remote import RemoteBackend

        return RemoteBackend(v.endpoint)

    # ------------------------------------------------------------------------------------- generation

    def stream(
        self,
        name: str,
        instruction: str,
        settings: GenerationSettings | None = None,
        cancel: threading.Event | None = None,
        stats: GenerationStats | None = None,
    ) -> Iterator[str]:
        """The variant's reply to one instruction, piece by piece (the template is applied here)."""
        settings = settings or GenerationSettings()
        v = self.variant(name)
        template = get_template(v.template)
        prompt = template.build(instruction)
        if v.backend == "openai":
            yield from self._remote(v).stream(prompt, settings, template.stop, cancel, stats)
            return
        base, adapter = self.prepare(name)
        engine = self.fast_engine(name, base, adapter)
        with base.use(adapter) as model:
            if engine is not None:
                yield from fast.stream(
                    engine, model, adapter, base.tokenizer, prompt, settings, template.stop, cancel, stats
                )
            else:
                yield from generation.stream(
                    model, base.tokenizer, prompt, settings, template.stop, cancel, stats
                )

    def generate(self, name: str, instruction: str, settings: GenerationSettings | None = None) -> str:
        return "".join(self.stream(name, instruction, settings)).strip()

    def generate_batch(
        self, name: str, instructions: list[str], settings: GenerationSettings | None = None
    ) -> list[str]:
        settings = settings or GenerationSettings()
        v = self.variant(name)
        template = get_template(v.template)
        prompts = [template.build(i) for i in instructions]
        if v.backend == "openai":
            remote = self._remote(v)
            return [remote.complete(p, settings, template.stop) for p in prompts]
        base, adapter = self.prepare(name)
        engine = self.fast_engine(name, base, adapter)
        with base.use(adapter) as model:
            if engine is not None:  # one sequence at a time: on CPU this beats a padded batch in float32
                return [
                    fast.generate(engine, model, adapter, base.tokenizer, p, settings, template.stop)
                    for p in prompts
                ]
            return generation.generate_batch(model, base.tokenizer, prompts, settings, template.stop)

    def nll(self, name: str, instructions: list[str], references: list[str]) -> list[float]:
        """Mean per-token negative log-likelihood of each reference response under the variant.

        Always the float32 reference model (not the fast path): scores stay comparable across machines.
        """
        template = self.template(name)
        base, adapter = self.prepare(name)
        prompts = [template.build(i) for i in instructions]
        with base.use(adapter) as model:
            return generation.response_nll(model, base.tokenizer, prompts, references)
