"""The Chat tab: talk to any variant, replies streamed token by token, and what people expect of a chat.

Send / Stop / Clear, settings and examples, plus the chat box's own tools (Gradio's gr.Chatbot events):

- Retry (↻ under the last answer) samples that answer again with the current variant and settings. With the
  seed field empty every answer draws a fresh seed; with a fixed seed the same seed would give the same tokens,
  so retry moves the seed field on by one (7 -> 8) and says so: the answer shown is always reproducible from
  the seed recorded with it. At temperature 0 (greedy) every retry gives the same answer, and the note says so.
- Undo (↶) removes the last exchange and puts its question back in the message box.
- Edit (✎ on one of your messages) drops everything after that message and answers the edited text.
- Thumbs up / down on an answer append one line to ``<runs>/chat/feedback.jsonl`` (time, hashed session,
  variant, settings, seed, prompt, history, answer, liked).
- Download the conversation as JSONL (one message a line: role, content and, for answers, the variant,
  settings and seed that produced them) or Markdown; Import such a JSONL file to continue it. An import is
  checked line by line (vichat.data's tolerant reader): bad lines, wrong roles and turns that do not
  alternate are listed by line number, and the conversation on screen stays as it was.

Which variant, settings and seed produced each answer is kept in a ``gr.State`` beside the chat box ("turns":
one entry per message, None for the user's), because Gradio's messages carry no such fields. Public mode keeps
its limits on every path: retry and edit generate through :meth:`ChatHandlers.respond` (the rate limit, the
ZeroGPU decorator), imports are bounded by the upload policy and deleted with the session, feedback clicks
have their own per-session budget.
"""

from __future__ import annotations

import hashlib
import inspect
import secrets
import shutil
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr

from ui.common import (
    SEED_MAX,
    Cancellations,
    check,
    coalesced,
    default_variant,
    describe_variant,
    loading_notes,
    make_settings,
    prompt_problem,
    refusals,
    require_ready,
    session_of,
    settings_controls,
    settings_problems,
    unavailable_reason,
    variant_choices,
)
from ui.public import MB, Guard, RateLimiter, check_upload_size, upload_folder
from ui.spaces import GPU_SECONDS, gpu
from vichat.data import check_record, iter_json_lines
from vichat.errors import ViChatError
from vichat.files import atomic_write_lines, atomic_write_text
from vichat.generation import GenerationSettings, GenerationStats
from vichat.jsonl import JsonlAppender
from vichat.paths import REPO_ROOT
from vichat.prompts import history_instruction
from vichat.registry import Registry

EXAMPLES_CHAT = [
    "Hãy giới thiệu ngắn gọn về vịnh Hạ Long.",
    "Viết một bài thơ lục bát bốn câu về mùa thu Hà Nội.",
    "Làm thế nào để quản lý thời gian hiệu quả khi vừa học vừa làm?",
]
EXAMPLES_DOCTOR = [
    "Chào bác sĩ, tôi 30 tuổi, bị ho khan và đau họng ba ngày nay, không sốt. Tôi nên làm gì?",
    "Con tôi 2 tuổi sốt 38,5 độ từ tối qua, vẫn chơi và bú được. Khi nào tôi cần đưa cháu đi khám?",
]
TOOLS = (
    "↻ **Retry** samples the last answer again: a new seed when the seed field is empty, else the seed "
    "moves on by one (a fixed seed gives the same answer). ↶ **Undo** removes the last exchange. ✎ **Edit** "
    "one of your messages to drop what came after it and answer it again. **Thumbs** up or down on an "
    "answer are logged to improve the models. Download the conversation, or import a JSONL one to continue it."
)
ROLES = ("user", "assistant")
EXPORT_NAME = "vichat-conversation"
KINDS = ("JSONL", "Markdown")  # the download buttons, in order
SHOWN_PROBLEMS = 10
FEEDBACK_HISTORY_CHARS = 20_000  # the earlier turns logged with a thumb, newest first (a fold, as the prompt)
FEEDBACK_PER_GENERATION = 5  # public mode: feedback clicks a minute per session, per generation allowed


def history_rule() -> str:
    """The multi-turn rule of vichat.prompts.history_instruction, in one sentence."""
    limit = inspect.signature(history_instruction).parameters["max_chars"].default
    return (
        "Multi-turn: the paper's template takes one instruction, so earlier turns are folded into it "
        '(under "Cuộc trò chuyện trước đó:", newest kept, oldest dropped beyond '
        f'{limit:,} characters) and your new message comes last after "Câu hỏi hiện tại:".'
    )


def pairs(history: list[dict]) -> list[tuple[str, str]]:
    """(user, assistant) turns from Gradio's messages-format history."""
    out, user = [], None
    for m in history:
        if not isinstance(m, dict):
            continue
        if m.get("role") == "user":
            user = _text(m.get("content", ""))
        elif m.get("role") == "assistant" and user is not None:
            out.append((user, _text(m.get("content", ""))))
            user = None
    return out


def _text(content) -> str:
    """Message text; Gradio 6 may hand content back as a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)


def format_stats(stats: GenerationStats) -> str:
    if not stats.new_tokens:
        return ""
    return (
        f"{stats.new_tokens} tokens · first token after {stats.first_token_s or 0:.2f} s · "
        f"{stats.tokens_per_s:.1f} tokens/s · stopped by {stats.stopped_by}"
    )


def history_problem(history) -> str | None:
    """Why a history handed over (by the page or an API caller) is unusable, or None."""
    if history is None:
        return None
    if not isinstance(history, list) or not all(
        isinstance(m, dict) and m.get("role") in ("user", "assistant", "system") and "content" in m
        for m in history
    ):
        return "the chat history must be a list of {role, content} messages: press Clear and start again"
    return None


# ------------------------------------------------------------------------------------------ provenance


def aligned(turns, history) -> list:
    """The provenance list cut or padded (None: unknown) to one entry per message of ``history``."""
    turns = list(turns) if isinstance(turns, list) else []
    n = len(history or [])
    return (turns + [None] * n)[:n]


def provenance(name: str, settings: GenerationSettings, instruction: str) -> dict:
    """What produced one answer: the variant, its decoding settings (seed apart) and the seed."""
    knobs = {k: v for k, v in settings.to_dict().items() if k != "seed"}
    return {"variant": name, "settings": knobs, "seed": settings.seed, "instruction": instruction}


def with_seed(settings: GenerationSettings) -> GenerationSettings:
    """``settings`` with a drawn seed when it has none, so every answer can be reproduced from its record."""
    return settings if settings.seed is not None else settings.with_(seed=secrets.randbelow(SEED_MAX + 1))


def hashed(session: str) -> str:
    """A session id that cannot be traced back to the browser's own."""
    return hashlib.sha256(session.encode("utf-8")).hexdigest()[:16]


def _index(evt) -> int | None:
    """An event's message index (an int, or the row of a (row, column) pair), or None when there is none."""
    index = getattr(evt, "index", None)
    if isinstance(index, list | tuple) and index:
        index = index[0]
    return index if isinstance(index, int) and not isinstance(index, bool) else None


# ---------------------------------------------------------------------------------------------- export


def conversation_records(history, turns) -> list[dict]:
    """One JSON record per message: role and content, and for answers the variant, settings and seed."""
    out = []
    for message, made_by in zip(history or [], aligned(turns, history), strict=True):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            continue
        record = {"role": role, "content": _text(message.get("content", ""))}
        if role == "assistant" and isinstance(made_by, dict):
            record.update({k: made_by.get(k) for k in ("variant", "settings", "seed")})
        out.append(record)
    return out


def download_label(kind: str, messages: int = 0) -> str:
    return f"⬇ Conversation ({kind} · {messages} messages)" if messages else f"⬇ Conversation ({kind})"


def conversation_markdown(records: list[dict], when: datetime | None = None) -> str:
    when = when or datetime.now(timezone.utc)
    lines = [
        "# ViChat conversation",
        "",
        f"Exported {when:%Y-%m-%d %H:%M} UTC · {len(records)} messages",
        "",
    ]
    for r in records:
        if r["role"] == "user":
            lines += ["---", "", "**You**", "", r["content"], ""]
            continue
        head = f"**{r.get('variant') or 'Assistant'}**"
        if r.get("seed") is not None:
            head += f" · seed {r['seed']}"
        if isinstance(r.get("settings"), dict):
            head += " · " + ", ".join(f"{k} {v}" for k, v in r["settings"].items())
        lines += [head, "", r["content"] or "_(no answer: stopped)_", ""]
    return "\n".join(lines).rstrip() + "\n"


class Exports:
    """Each session's download files, in a folder of its own under the temp dir (served by Gradio), deleted
    when the session ends. Written atomically: a second export of the same session never tears the first."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else Path(tempfile.gettempdir()) / "vichat-chat-exports"

    def folder(self, session: str) -> Path:
        return self.root / hashed(session)

    def write(self, session: str, records: list[dict]) -> tuple[Path, Path]:
        folder = self.folder(session)
        jsonl, md = folder / f"{EXPORT_NAME}.jsonl", folder / f"{EXPORT_NAME}.md"
        atomic_write_lines(jsonl, records)
        atomic_write_text(md, conversation_markdown(records))
        return jsonl, md

    def close_session(self, session: str | None) -> None:
        shutil.rmtree(self.folder(session or "-"), ignore_errors=True)


# ---------------------------------------------------------------------------------------------- import


def read_conversation(path: Path, label: str) -> tuple[list[dict], list[dict | None], list[str]]:
    """(messages, provenance, problems) of an exported conversation; any problem means nothing is taken.

    Bad JSON, a wrong role, an empty or huge user message, a bad seed, turns that do not alternate
    (user, assistant, user, ...): each is one ``line N: ...`` problem.
    """
    problems: list[str] = []
    records: list[tuple[int, dict]] = []
    with path.open("rb") as stream:
        for number, value, error in iter_json_lines(stream, label):
            if error is not None:
                problems.append(f"line {error.line}: {error.reason}")
                continue
            problem = message_problem(value)
            if problem:
                problems.append(f"line {number}: {problem}")
            else:
                records.append((number, value))
    if not problems:
        problems = alternation_problems(records)
    if not problems and not records:
        problems = ["no messages: the file is empty (export a conversation from the Chat tab first)"]
    if problems:
        return [], [], problems
    history, turns = [], []
    for _, r in records:
        history.append({"role": r["role"], "content": r["content"]})
        made_by = {k: r.get(k) for k in ("variant", "settings", "seed")} if r["role"] == "assistant" else None
        turns.append(made_by if made_by and any(v is not None for v in made_by.values()) else None)
    return history, turns, []


def message_problem(value) -> str | None:
    """Why one line is not a message of a conversation, or None."""
    problem = check_record(value, ("role",))
    if problem:
        return problem[1]
    role, content = value["role"], value.get("content")
    if role not in ROLES:
        return f'role must be "user" or "assistant", got {role[:40]!r}'
    if "content" not in value:
        return 'missing field "content"'
    if not isinstance(content, str):
        return f'field "content" must be a string, got {type(content).__name__}'
    if role == "user" and prompt_problem(content):
        return f"the user message: {prompt_problem(content)}"
    if role == "assistant":
        seed = value.get("seed")
        if seed is not None and (
            not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX
        ):
            return f"seed must be a whole number in [0, {SEED_MAX}] or null, got {seed!r}"
        if value.get("variant") is not None and not isinstance(value["variant"], str):
            return 'field "variant" must be a string'
        if value.get("settings") is not None and not isinstance(value["settings"], dict):
            return 'field "settings" must be an object'
    return None


def alternation_problems(records: list[tuple[int, dict]]) -> list[str]:
    """Turns must go user, assistant, user, ...; a last user message without an answer is allowed."""
    problems = []
    if records and records[0][1]["role"] != "user":
        problems.append(f"line {records[0][0]}: the conversation must start with a user message")
    for (before, a), (number, b) in zip(records, records[1:], strict=False):
        if a["role"] == b["role"]:
            problems.append(
                f'line {number}: a second "{b["role"]}" message in a row (after line {before}): '
                "turns must alternate user, assistant, user, ..."
            )
    return problems


def problems_markdown(label: str, problems: list[str]) -> str:
    shown = [f"- {p}" for p in problems[:SHOWN_PROBLEMS]]
    if len(problems) > SHOWN_PROBLEMS:
        shown.append(f"- ... and {len(problems) - SHOWN_PROBLEMS} more")
    noun = "problem" if len(problems) == 1 else "problems"
    return (
        f"**{label}: not imported**, {len(problems)} {noun} (the conversation shown is unchanged):\n"
        + "\n".join(shown)
    )


# ---------------------------------------------------------------------------------------------- feedback


class FeedbackLog:
    """``<runs>/chat/feedback.jsonl``, opened on the first thumb (an app nobody rates writes nothing)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._appender: JsonlAppender | None = None
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        with self._lock:
            if self._appender is None:
                self._appender = JsonlAppender(self.path)
        self._appender.write(record)


def earlier_turns(history: list[dict], before: int, budget: int = FEEDBACK_HISTORY_CHARS) -> list[list[str]]:
    """The (user, assistant) turns before message ``before``, newest kept within ``budget`` characters."""
    kept, used = [], 0
    for user, bot in reversed(pairs(history[:before])):
        used += len(user) + len(bot)
        if used > budget:
            break
        kept.insert(0, [user, bot])
    return kept


# ---------------------------------------------------------------------------------------------- handlers


class ChatHandlers:
    """What the Chat tab's events call (plain methods, so tests call them without a browser)."""

    def __init__(
        self,
        registry: Registry,
        cancellations: Cancellations,
        guard: Guard | None = None,
        runs: Path | None = None,
        exports: Exports | None = None,
    ) -> None:
        self.registry, self.cancellations, self.guard = registry, cancellations, guard or Guard()
        self.feedback = FeedbackLog(
            Path(runs if runs is not None else REPO_ROOT / "runs") / "chat" / "feedback.jsonl"
        )
        self.exports = exports or Exports()
        rate = self.guard.policy.generations_per_minute
        self.feedback_limiter = RateLimiter(None if rate is None else rate * FEEDBACK_PER_GENERATION)
        self.guard.on_close(self.exports.close_session)
        self.guard.on_close(self.feedback_limiter.close_session)
        self.respond = gpu(self.respond, GPU_SECONDS["chat"])  # ZeroGPU: a GPU while it generates

    def validate(self, text, history, name, *values):
        settings, extra = values[:5], values[5:]  # extra: the turns state, which needs no check
        return [
            check(prompt_problem(text)),
            check(history_problem(history)),
            check(unavailable_reason(self.registry, name)),
            *(check(m) for m in settings_problems(*settings)),
            *(check(None) for _ in extra),
        ]

    def respond(
        self,
        text,
        history,
        name,
        max_new_tokens,
        temperature,
        top_k,
        penalty,
        seed,
        request: gr.Request,
        turns=None,
    ):
        """Stream the answer to ``text``: (history, message box, stats, prompt, turns) at each step."""
        problem = history_problem(history)
        if problem:
            raise gr.Error(problem)
        history = list(history or [])
        turns = aligned(turns, history)
        settings_obj = make_settings(max_new_tokens, temperature, top_k, penalty, seed)
        require_ready(self.registry, name)
        with refusals():
            instruction = history_instruction(pairs(history), text if isinstance(text, str) else "")
            prompt = self.registry.template(name).build(instruction)
            self.guard.limiter.take(session_of(request))
        settings_obj = with_seed(settings_obj)
        cancel = self.cancellations.new(f"{session_of(request)}:chat")
        history += [{"role": "user", "content": text.strip()}, {"role": "assistant", "content": ""}]
        turns += [None, provenance(name, settings_obj, instruction)]
        stats = GenerationStats()
        for note in loading_notes(self.registry, [name], cancel):  # never "generating..." while it loads
            yield history, "", f"loading the model before answering: {note}", prompt, turns
        yield history, "", "generating...", prompt, turns
        with refusals():
            pieces = self.registry.stream(name, instruction, settings_obj, cancel=cancel, stats=stats)
            for batch in coalesced(pieces):
                history[-1]["content"] += "".join(batch)
                yield history, "", f"{stats.new_tokens or ''} ...", prompt, turns
        done = format_stats(stats)
        yield history, "", f"{done} · seed {settings_obj.seed}" if done else "", prompt, turns

    def stop(self, request: gr.Request):
        self.cancellations.cancel(f"{session_of(request)}:chat")

    # ------------------------------------------------------------------------------- retry, undo, edit

    def retry(
        self,
        history,
        name,
        max_new_tokens,
        temperature,
        top_k,
        penalty,
        seed,
        turns,
        request: gr.Request,
        evt: gr.RetryData,
    ):
        """A new sample of the last answer: (history, stats, prompt, turns, seed field, note) at each step."""
        history, index = self._user_message(history, evt, "retry")
        settings_obj = make_settings(max_new_tokens, temperature, top_k, penalty, seed)
        note, seed_update = "Retry: a new seed for a new answer.", gr.skip()
        if settings_obj.seed is not None:
            seed = 0 if settings_obj.seed >= SEED_MAX else settings_obj.seed + 1
            seed_update = gr.update(value=seed)
            note = (
                f"Retry: seed {settings_obj.seed} → {seed} (a fixed seed gives the same answer, so retry moves "
                "it on by one; empty the seed field for a random one each time)."
            )
        if settings_obj.greedy:
            note += " Temperature 0 is greedy decoding: every retry gives the same answer; raise it to vary."
        text = _text(history[index]["content"])
        steps = self.respond(
            text, history[:index], name, max_new_tokens, temperature, top_k, penalty, seed, request,
            aligned(turns, history)[:index],
        )  # fmt: skip
        for h, _, stats, prompt, t in steps:
            yield h, stats, prompt, t, seed_update, note

    def undo(self, history, turns, evt: gr.UndoData):
        """Remove the last exchange: (history, turns, message box, stats, prompt, note)."""
        history, index = self._user_message(history, evt, "undo")
        text = _text(history[index]["content"])
        return (
            history[:index],
            aligned(turns, history)[:index],
            text,
            "",
            "",
            "Undone: the question is back in the box.",
        )

    def edit(
        self,
        history,
        name,
        max_new_tokens,
        temperature,
        top_k,
        penalty,
        seed,
        turns,
        request: gr.Request,
        evt: gr.EditData,
    ):
        """Answer an edited user message afresh, dropping what came after it: (history, stats, prompt, turns,
        note) at each step. A refused edit puts the message back as it was (the page has already changed it)."""
        original = list(history or []) if isinstance(history, list) else history
        index = _index(evt)
        if isinstance(original, list) and index is not None and 0 <= index < len(original):
            before = original[index]
            if isinstance(before, dict):
                original[index] = {**before, "content": getattr(evt, "previous_value", before.get("content"))}
        turns = aligned(turns, original if isinstance(original, list) else [])
        try:
            history, index = self._user_message(history, evt, "edit")
            text = _text(getattr(evt, "value", ""))
            if prompt_problem(text):
                raise gr.Error(f"the edited message: {prompt_problem(text)}")
            steps = self.respond(
                text, history[:index], name, max_new_tokens, temperature, top_k, penalty, seed, request,
                turns[:index],
            )  # fmt: skip
            for h, _, stats, prompt, t in steps:
                yield h, stats, prompt, t, "Edited: answered again from your changed message."
        except gr.Error:
            if isinstance(original, list):
                yield (
                    original,
                    gr.skip(),
                    gr.skip(),
                    turns,
                    "The edit was not sent: the message is as it was.",
                )
            raise

    def _user_message(self, history, evt, action: str) -> tuple[list, int]:
        problem = history_problem(history)
        if problem:
            raise gr.Error(problem)
        history, index = list(history or []), _index(evt)
        if index is None or not 0 <= index < len(history) or history[index].get("role") != "user":
            raise gr.Error(f"nothing to {action}: that is not one of your messages in this conversation")
        return history, index

    # ---------------------------------------------------------------------------------------- feedback

    def like(self, history, turns, request: gr.Request, evt: gr.LikeData) -> str:
        """Log a thumb on an answer; the note says it was recorded."""
        problem = history_problem(history)
        if problem:
            raise gr.Error(problem)
        history, index = list(history or []), _index(evt)
        if index is None or not 0 <= index < len(history) or history[index].get("role") != "assistant":
            raise gr.Error("feedback goes on an answer of this conversation")
        with refusals():
            self.feedback_limiter.take(session_of(request), what="feedback clicks")
        made_by = aligned(turns, history)[index]
        made_by = made_by if isinstance(made_by, dict) else {}
        question = next((i for i in range(index - 1, -1, -1) if history[i].get("role") == "user"), None)
        prompt = _text(history[question]["content"]) if question is not None else ""
        liked = getattr(evt, "liked", True)
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "session": hashed(session_of(request)),
            "variant": made_by.get("variant"),
            "settings": made_by.get("settings"),
            "seed": made_by.get("seed"),
            "prompt": prompt,
            "history": earlier_turns(history, question if question is not None else index),
            "instruction": made_by.get("instruction"),
            "answer": _text(history[index]["content"]),
            "liked": liked if isinstance(liked, bool | str) else bool(liked),
            "message_index": index,
        }
        try:
            self.feedback.write(record)
        except OSError as e:
            raise gr.Error(
                f"could not record the feedback ({e.strerror or e}); the chat is unaffected"
            ) from None
        thumb = {True: "thumbs up", False: "thumbs down"}.get(record["liked"], repr(record["liked"]))
        return f"Thanks: {thumb} recorded for this answer."

    # ---------------------------------------------------------------------------------- export, import

    def downloads(self, history, turns, request: gr.Request = None):
        """The two download buttons for the conversation shown: its files, and how many messages they hold
        in the label (off when the conversation is empty)."""
        records = conversation_records(history if isinstance(history, list) else [], turns)
        if not records:
            return tuple(gr.update(value=None, interactive=False, label=download_label(k)) for k in KINDS)
        try:
            files = self.exports.write(session_of(request), records)
        except OSError as e:
            raise gr.Error(f"could not prepare the download ({e.strerror or e})") from None
        return tuple(
            gr.update(value=str(f), interactive=True, label=download_label(k, len(records)))
            for k, f in zip(KINDS, files, strict=True)
        )

    def import_conversation(self, upload, request: gr.Request = None):
        """An uploaded JSONL conversation: (history, turns, message box, stats, prompt, note); on any problem
        the conversation shown stays and the note lists the problems by line."""
        keep = (gr.skip(),) * 5
        path = Path(upload) if isinstance(upload, str) and upload else None
        if path is None:
            return (*keep, "Import: choose a .jsonl file exported from this tab.")
        self.guard.uploads.track(session_of(request), path)
        if self.guard.public and not path.resolve().is_relative_to(upload_folder()):
            return (*keep, "Import: only a file uploaded here can be imported.")
        if not path.is_file():
            return (
                *keep,
                f"Import: {path.name} is gone (uploads are deleted after their session): upload it again.",
            )
        try:
            check_upload_size(path, self.guard.policy)
            history, turns, problems = read_conversation(path, path.name)
        except ViChatError as e:
            return (*keep, f"**{path.name}: not imported**: {e}")
        except OSError as e:
            return (
                *keep,
                f"**{path.name}: not imported**: cannot read it ({e.strerror or e}): upload it again",
            )
        if problems:
            return (*keep, problems_markdown(path.name, problems))
        pending = ""
        if history[-1]["role"] == "user":  # a question without its answer: ready to send
            pending = history.pop()["content"]
            turns.pop()
        answers = sum(m["role"] == "assistant" for m in history)
        note = f"Imported {path.name}: {answers} exchanges. Continue the conversation below."
        if pending:
            note += " Its last question, unanswered, is in the message box."
        return history, turns, pending, "", "", note


# ------------------------------------------------------------------------------------------------- layout


def build_chat_tab(
    registry: Registry, cancellations: Cancellations, guard: Guard | None = None, runs: Path | None = None
) -> gr.Dropdown:
    """The Chat tab; returns its variant picker (refreshed when a new variant is registered).

    ``runs`` is the app's runs folder (feedback goes to ``runs/chat/feedback.jsonl``; default ``runs/``).
    """
    handlers = ChatHandlers(registry, cancellations, guard, runs)
    policy = handlers.guard.policy
    start = default_variant(registry)
    with gr.Row():
        variant = gr.Dropdown(variant_choices(registry), value=start, label="Variant", scale=3)
        info = gr.Markdown(describe_variant(registry, start), elem_id="chat-variant-info")
    chatbot = gr.Chatbot(
        label="ViChat",
        height=420,
        elem_id="chat-box",
        editable="user",
        feedback_options=("Like", "Dislike"),
    )
    turns = gr.State([])
    gr.Markdown(history_rule(), elem_id="chat-rule")
    with gr.Row():
        message = gr.Textbox(
            label="Message",
            placeholder="Nhập câu hỏi bằng tiếng Việt...",
            show_label=False,
            scale=6,
            elem_id="chat-input",
        )
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", scale=1, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=1, elem_id="chat-clear")
    stats_md = gr.Markdown(elem_id="chat-stats")
    note = gr.Markdown(elem_id="chat-note")
    with gr.Row():
        download_jsonl, download_md = (
            gr.DownloadButton(
                download_label(k), interactive=False, size="sm", elem_id=f"chat-download-{suffix}"
            )
            for k, suffix in zip(KINDS, ("jsonl", "md"), strict=True)
        )
        upload = gr.UploadButton(
            f"⬆ Import a JSONL conversation (up to {policy.max_upload_bytes / MB:g} MB)",
            file_types=[".jsonl"],
            type="filepath",
            size="sm",
            elem_id="chat-import",
        )
    gr.Markdown(TOOLS, elem_id="chat-tools")
    settings = settings_controls()
    seed_box = settings[4]
    with gr.Accordion("The prompt the model saw (template + folded history)", open=False):
        prompt_box = gr.Textbox(show_label=False, lines=6, interactive=False, elem_id="chat-prompt")
    gr.Examples(EXAMPLES_CHAT + EXAMPLES_DOCTOR, inputs=message, label="Examples (Chat, then Doctor)")

    asked = [message, chatbot, variant, *settings]
    outputs = [chatbot, message, stats_md, prompt_box, turns]
    generate = {"concurrency_id": "generate", "concurrency_limit": registry.max_batch}
    common = {"validator": handlers.validate, **generate}
    private = {"api_visibility": "private"}
    refresh = {"fn": handlers.downloads, "inputs": [chatbot, turns], "outputs": [download_jsonl, download_md],
               "queue": False, **private}  # fmt: skip
    # The API's /chat keeps its contract (message, history, variant, 5 settings -> history, box, stats, prompt):
    # an endpoint of its own with no trigger on the page, so the page's events may carry the turns state.
    api = gr.on([], handlers.respond, asked, outputs, api_name="chat", **common)
    ev1 = send.click(handlers.respond, [*asked, turns], outputs, **common, **private)
    ev2 = message.submit(handlers.respond, [*asked, turns], outputs, **common, **private)
    ev3 = chatbot.retry(
        handlers.retry,
        [chatbot, variant, *settings, turns],
        [chatbot, stats_md, prompt_box, turns, seed_box, note],
        **generate,
        **private,
    )
    ev4 = chatbot.edit(
        handlers.edit,
        [chatbot, variant, *settings, turns],
        [chatbot, stats_md, prompt_box, turns, note],
        **generate,
        **private,
    )
    for event in (ev1, ev2, ev3, ev4):
        event.then(**refresh)
    stop.click(handlers.stop, None, None, cancels=[api, ev1, ev2, ev3, ev4], queue=False).then(**refresh)
    chatbot.undo(
        handlers.undo,
        [chatbot, turns],
        [chatbot, turns, message, stats_md, prompt_box, note],
        queue=False,
        **private,
    ).then(**refresh)
    chatbot.like(handlers.like, [chatbot, turns], note, queue=False, **private)
    upload.upload(
        handlers.import_conversation, upload, [chatbot, turns, message, stats_md, prompt_box, note], **private
    ).then(**refresh)
    emptied = [chatbot, message, stats_md, prompt_box, turns, note]
    clear.click(lambda: ([], "", "", "", [], ""), None, emptied, queue=False, **private).then(**refresh)
    chatbot.clear(lambda: ("", "", "", [], ""), None, emptied[1:], queue=False, **private).then(**refresh)
    variant.change(lambda name: describe_variant(registry, name), variant, info, queue=False)
    return variant
