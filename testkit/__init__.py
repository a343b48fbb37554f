"""Test support, outside the product: stand-in servers and tiny models for the tests and the benchmarks.

Nothing in ``vichat``, ``train``, ``eval`` or ``ui`` imports this package, and it is not installed with them
(pyproject's ``packages.find`` leaves it out); tests and ``bench`` import it from the repository root.

- :mod:`testkit.http`: a quiet threaded HTTP server on 127.0.0.1, in a daemon thread, both stand-ins build on;
- :mod:`testkit.openai_server`: an OpenAI-compatible Chat Completions server (the judge, remote answers);
- :mod:`testkit.translate_server`: Google Translate's mobile page, for ``train.translate``;
- :mod:`testkit.tiny`: tiny random BLOOM, GPT-J and Gemma 3 models, their tokenizer and LoRA adapters.
"""
