"""The paper's prompt templates (data in assets/templates/), prompt building and response cutting."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from vichat.errors import PromptError, ViChatError
from vichat.paths import TEMPLATES_DIR

MAX_PROMPT_CHARS = 16_000


@dataclass(frozen=True)
class Template:
    name: str
    prompt: str
    response_split: str
    stop: tuple[str, ...]
    description: str = ""

    def build(self, instruction: str) -> str:
        """The full prompt for one instruction, ending where the model's response begins."""
        text = check_instruction(instruction)
        return self.prompt.replace("{instruction}", text)

    def cut_response(self, generated: str) -> str:
        """The response alone from text the model generated after the prompt.

        Stops at the first stop marker (a new ``### Instruction:`` means the model started another turn).
        """
        return cut_at_stops(generated, self.stop).strip()


def check_instruction(instruction: str) -> str:
    if not isinstance(instruction, str):
        raise PromptError(f"the prompt must be text, got {type(instruction).__name__}")
    text = instruction.strip()
    if not text:
        raise PromptError("the prompt is empty: type a question or an instruction")
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptError(
            f"the prompt is {len(text):,} characters long; the limit is {MAX_PROMPT_CHARS:,}. Shorten it."
        )
    return text


def cut_at_stops(text: str, stops: tuple[str, ...] | list[str]) -> str:
    cut = len(text)
    for stop in stops:
        i = text.find(stop)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def held_back(text: str, stops: tuple[str, ...] | list[str]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop marker (not yet safe to show)."""
    n = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                n = max(n, k)
                break
    return n


@cache
def _load(path: Path) -> Template:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ViChatError(f"template file {path} cannot be read: {e}") from e
    missing = {"name", "prompt", "response_split", "stop"} - set(data)
    if missing or "{instruction}" not in data.get("prompt", ""):
        raise ViChatError(
            f"template file {path} needs name, prompt (with {{instruction}}), response_split, stop"
        )
    return Template(
        name=data["name"],
        prompt=data["prompt"],
        response_split=data["response_split"],
        stop=tuple(data["stop"]),
        description=data.get("description", ""),
    )


def template_names(directory: Path = TEMPLATES_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.json"))


def get_template(name: str, directory: Path = TEMPLATES_DIR) -> Template:
    path = directory / f"{name}.json"
    if not path.is_file():
        raise ViChatError(f"unknown template {name!r}; known: {', '.join(template_names(directory))}")
    return _load(path)


def history_instruction(history: list[tuple[str, str]], message: str, max_chars: int = 2_000) -> str:
    """Fold a multi-turn chat into the paper's single-instruction template.

    Rule: earlier turns go first, oldest dropped first, as "Người dùng: ..." / "Trợ lý: ..." lines under
    the heading "Cuộc trò chuyện trước đó:", within ``max_chars`` characters; the new message comes last
    after "Câu hỏi hiện tại:". With no history the message is the instruction unchanged.
    """
    message = check_instruction(message)
    turns: list[str] = []
    used = 0
    for user, bot in reversed(history):
        block = f"Người dùng: {user.strip()}\nTrợ lý: {bot.strip()}"
        if used + len(block) > max_chars:
            break
        turns.insert(0, block)
        used += len(block)
    if not turns:
        return message
    return "Cuộc trò chuyện trước đó:\n" + "\n".join(turns) + "\n\nCâu hỏi hiện tại: " + message
