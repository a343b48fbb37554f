"""The arena in the Compare tab: one vote per comparison, recorded to the runs folder, and the leaderboard.

A comparison (ui/compare.py) ends in a :class:`Battle`, kept in the page's ``gr.State`` (on the server, never
sent to the browser): which variant was shown as A and as B, both answers, the settings and seed. A vote is
cast on that battle only, so neither the names nor the answers of a vote ever come from the page or an API
caller. :class:`Arena` checks the battle (finished, not stopped, not voted on yet), rate-limits votes per
session like generations, appends the vote to ``<runs>/arena/votes.jsonl`` with eval.arena.record_vote (one
locked, fsynced line) and renders the leaderboard with eval.arena.leaderboard, the function
``python -m eval.arena`` uses, blind votes only unless asked. The votes log is fixed when the app starts:
no visitor ever names a path.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr

from eval.arena import VOTES, Vote, VoteError, leaderboard, markdown, read_votes, record_vote
from ui.public import Guard, RateLimiter
from vichat.errors import ViChatError
from vichat.generation import GenerationSettings
from vichat.paths import REPO_ROOT

VOTES_LOG = Path("arena") / "votes.jsonl"  # under the app's runs folder
BOOTSTRAP = 200  # resamples for the rating intervals, as ``python -m eval.arena`` by default
REMEMBERED = 100_000  # battle ids kept to refuse a second vote on the same comparison
BUTTONS = (  # (vote, button label), in the order of the vote row
    ("a", "A is better"),
    ("b", "B is better"),
    ("tie", "Tie"),
    ("bad", "Both bad"),
)
SAID = dict(BUTTONS)
ALREADY = "you already voted on this comparison: run a new one to vote again"
EMPTY_BOARD = "No votes yet: compare two variants (blind) and vote for the better answer."


def votes_log(runs: str | os.PathLike[str] | None) -> Path:
    """The votes log of an app whose runs folder is ``runs`` (the default runs/ of the repository if None)."""
    return Path(runs if runs is not None else REPO_ROOT / "runs") / VOTES_LOG


@dataclass(frozen=True)
class Battle:
    """One comparison as the vote needs it; lives in the page's gr.State (server side)."""

    id: str
    prompt: str
    a: str
    b: str
    blind: bool
    settings: GenerationSettings
    answers: tuple[str, str] = ("", "")
    done: bool = False  # both answers finished
    stopped: bool = False  # the user pressed Stop: no vote on half answers
    vote: str | None = None  # set once the vote is recorded

    def label(self, side: str) -> str:
        """The answer box's label: the side only while the names are hidden."""
        name = self.a if side == "A" else self.b
        return side if self.hidden else f"{side}: {name}"

    @property
    def hidden(self) -> bool:
        return self.blind and self.vote is None

    @property
    def votable(self) -> bool:
        return self.done and not self.stopped and self.vote is None

    def finished(self, answers: tuple[str, str], stopped: bool) -> Battle:
        return replace(self, answers=answers, done=True, stopped=stopped)


def new_battle(prompt: str, a: str, b: str, blind: bool, settings: GenerationSettings) -> Battle:
    return Battle(secrets.token_hex(8), prompt, a, b, bool(blind), settings)


def reveal(battle: Battle) -> str:
    """What the page says after a vote: the vote and who was who."""
    return f"Vote recorded: **{SAID[battle.vote]}**. A was **{battle.a}**, B was **{battle.b}**" + (
        " (blind)." if battle.blind else " (names were shown: an open vote)."
    )


def prompt_to_vote(battle: Battle) -> str:
    """What the page says once a comparison has ended."""
    if battle.stopped:
        return "Stopped before both answers finished: run the comparison again to vote."
    if battle.blind:
        return "Which answer is better? Vote below: the names show after your vote."
    return "Vote below if you like: open votes (names shown) are counted apart from blind ones."


class Arena:
    """Votes on battles, and the leaderboard of the votes log (one per app; thread-safe)."""

    def __init__(self, path: str | os.PathLike[str], guard: Guard | None = None) -> None:
        self.path = Path(path)  # fixed by the app (--runs): never from a visitor
        self.guard = guard or Guard()
        self.limiter = RateLimiter(self.guard.policy.generations_per_minute)  # votes have their own window
        self.guard.on_close(self.limiter.close_session)
        self._key = secrets.token_bytes(16)  # session ids in the log are keyed hashes, not the raw ones
        self._lock = threading.Lock()
        self._voted: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._cache: dict[bool, tuple[tuple, str]] = {}  # per filter: (log size and time, Markdown)

    def session_id(self, session: str | None) -> str | None:
        """The id stored with a vote: a keyed hash of the browser session (None without one)."""
        if not session or session == "-":
            return None
        return hmac.new(self._key, session.encode("utf-8"), hashlib.sha256).hexdigest()[:16]

    def refusal(self, battle) -> str | None:
        """Why ``battle`` cannot take a vote now, or None."""
        if not isinstance(battle, Battle):
            return "compare two answers first, then vote"
        if battle.vote is not None or battle.id in self._voted:
            return ALREADY
        if not battle.done:
            return "wait until both answers are finished, then vote"
        if battle.stopped:
            return "this comparison was stopped before both answers finished: run it again to vote"
        return None

    def vote(self, battle, choice: str, session: str | None) -> Battle:
        """Record ``choice`` ("a", "b", "tie" or "bad") on ``battle``; the battle with its vote set.

        Raises gr.Error (the page shows it) for a vote before the answers finished, a second vote on the same
        battle, the rate limit, or a log that cannot be written.
        """
        if choice not in VOTES:
            raise gr.Error(f"a vote is one of {', '.join(VOTES)} (got {choice!r})")
        problem = self.refusal(battle)
        if problem:
            raise gr.Error(problem)
        try:
            self.limiter.take(session, what="votes")
        except ViChatError as e:
            raise gr.Error(str(e)) from None
        with self._lock:  # two clicks at once: the first one counts
            if battle.id in self._voted:
                raise gr.Error(ALREADY)
            self._voted[battle.id] = None
            while len(self._voted) > REMEMBERED:
                self._voted.popitem(last=False)
        try:
            record_vote(
                self.path,
                Vote(
                    prompt=battle.prompt,
                    a=battle.a,
                    b=battle.b,
                    vote=choice,
                    answer_a=battle.answers[0],
                    answer_b=battle.answers[1],
                    settings=battle.settings,
                    blind=battle.blind,
                    seed=battle.settings.seed,
                    session=self.session_id(session),
                ),
            )
        except (OSError, VoteError) as e:
            with self._lock:
                self._voted.pop(battle.id, None)  # not recorded: the user may try again
            what = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise gr.Error(f"the vote could not be saved ({what}); try again") from None
        return replace(battle, vote=choice)

    # ------------------------------------------------------------------------------------- the board

    def board(self, include_open: bool = False) -> str:
        """The leaderboard as Markdown (blind votes only unless ``include_open``), cached per log state."""
        include_open = bool(include_open)
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return EMPTY_BOARD
        except OSError as e:
            return f"The votes log cannot be read ({e.strerror or e})."
        state = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._cache.get(include_open)
        if cached is not None and cached[0] == state:
            return cached[1]
        text = self._render(include_open)
        self._cache[include_open] = (state, text)
        return text

    def _render(self, include_open: bool) -> str:
        try:
            votes, problems = read_votes(self.path)
        except (OSError, VoteError) as e:
            return f"The votes log cannot be read ({getattr(e, 'strerror', None) or e})."
        counted = votes if include_open else [v for v in votes if v.blind]
        skipped = f"\n\n{len(problems)} bad lines of the log skipped." if problems else ""
        if not counted:
            if votes:
                return (
                    f"No blind votes yet ({len(votes)} open votes: tick *count open votes too* to see them)."
                    + skipped
                )
            return EMPTY_BOARD + skipped
        text = markdown(leaderboard(counted, bootstrap=BOOTSTRAP, seed=0))
        text = text.removeprefix("# ViChat arena\n\n").replace("\n## Head-to-head", "\n#### Head-to-head")
        which = "blind and open votes" if include_open else "blind votes only"
        return f"Counting {which}.\n\n{text}{skipped}"


def vote_buttons() -> list[gr.Button]:
    """The vote row: four buttons, inactive until a comparison has finished."""
    with gr.Row(elem_id="arena-votes"):
        return [
            gr.Button(label, interactive=False, elem_id=f"arena-vote-{choice}", size="md")
            for choice, label in BUTTONS
        ]


def buttons_update(active: bool) -> list[dict]:
    return [gr.update(interactive=active) for _ in BUTTONS]


def leaderboard_section(arena: Arena) -> tuple[gr.Markdown, gr.Checkbox, gr.Button]:
    """The leaderboard accordion: the table (recomputed on every page load), a filter and a refresh button."""
    with gr.Accordion("Leaderboard (arena votes)", open=False, elem_id="arena-leaderboard"):
        with gr.Row():
            include_open = gr.Checkbox(
                False,
                label="count open votes too (names shown while voting)",
                elem_id="arena-include-open",
                scale=4,
            )
            refresh = gr.Button("Refresh", size="sm", scale=1, elem_id="arena-refresh")
        board = gr.Markdown(lambda: arena.board(False), elem_id="arena-board")
    return board, include_open, refresh
