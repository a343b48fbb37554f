"""The arena: people's votes between two variants' answers, and the ratings that follow from them.

    python -m eval.arena [--votes runs/arena/votes.jsonl] [--bootstrap 200] [--blind-only] [--out FILE.md|.json]

Why: a judge model scores answers against a reference (eval.judge); people comparing two answers side by
side, names hidden, are the other half of an honest evaluation. FastChat's Chatbot Arena collects exactly
this kind of vote (A better, B better, tie, both bad); the app's Compare tab collects ours, one JSON line per
vote in ``runs/arena/votes.jsonl`` (:func:`record_vote`, safe for several app processes at once).

From the votes, :func:`leaderboard` computes per variant its games, wins / ties / losses, "both bad" count,
a win rate (ties half) with a 95% Wilson interval, and a Bradley-Terry rating on an Elo-like scale. We fit
Bradley-Terry by maximum likelihood rather than running online Elo updates: online Elo depends on the order
in which votes arrive and on a K-factor, so the same votes shuffled give other ratings; the Bradley-Terry
fit depends only on the set of votes. A tiny prior (half a virtual tied game between every two variants)
keeps an undefeated variant finite and variants that never met on one scale. The 95% intervals
come from a bootstrap over votes, seeded, so the same log always gives the same table.

Everything but :func:`record_vote`, :func:`read_votes` and :func:`main` is pure arithmetic, no I/O.
"""

from __future__ import annotations

import fcntl
import math
import os
import random
import re
import secrets
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vichat.errors import ViChatError
from vichat.jsonl import JsonlAppender, has_lone_surrogate, log_lines

DEFAULT_VOTES = Path("runs/arena/votes.jsonl")
VOTES = ("a", "b", "tie", "bad")  # a better, b better, both as good, both bad
Z95 = 1.959963984540054  # the normal quantile for a two-sided 95% interval
PRIOR_GAMES = 0.5  # virtual tied games between every two variants (a tiny prior)
SCALE = 400.0  # rating points per factor of 10 in strength (as in Elo)
CENTRE = 1000.0  # the mean rating
_SESSION = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_FIELDS = ("time", "prompt", "a", "b", "vote", "blind", "settings", "seed", "answer_a", "answer_b", "session")


class VoteError(ViChatError, ValueError):
    """A vote or a vote record that is not valid; the message names the line (if any) and the field."""


def now_utc() -> str:
    """The current time as ISO-8601 UTC, to the second (``2025-05-01T12:34:56Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_session() -> str:
    """A short opaque id for one user's voting session (16 hex digits)."""
    return secrets.token_hex(8)


def battle_sides(first: str, second: str, rng: random.Random | None = None) -> tuple[str, str]:
    """The two variants on random sides, ``(a, b)``: what a blind comparison shows left and right."""
    if first == second:
        raise VoteError(f"a battle needs two different variants (got {first!r} twice)")
    pick = (rng or random.SystemRandom()).random() < 0.5
    return (first, second) if pick else (second, first)


def _settings_type():
    from vichat.generation import GenerationSettings  # torch comes with it: import only when needed

    return GenerationSettings


@dataclass(frozen=True)
class Vote:
    """One vote: the prompt, the variant shown as A and as B, their answers, and which was better.

    ``vote`` is "a", "b", "tie" or "bad" (both bad). ``settings`` are the generation settings both answers
    were made with (a ``GenerationSettings`` or a mapping of its fields; missing fields take the defaults).
    ``seed`` is the sampling seed actually used (filled from ``settings.seed`` when that is set); ``blind``
    whether the names were hidden when the user voted; ``session`` a short opaque id of the voter's session.
    Every field is checked on construction (:class:`VoteError`).
    """

    prompt: str
    a: str
    b: str
    vote: str
    answer_a: str
    answer_b: str
    settings: Any
    blind: bool = True
    seed: int | None = None
    session: str | None = None
    time: str = field(default_factory=now_utc)

    def __post_init__(self) -> None:
        _check_vote(self, "")

    def to_record(self) -> dict:
        """The JSON line, fields in a fixed order."""
        return {
            "time": self.time,
            "prompt": self.prompt,
            "a": self.a,
            "b": self.b,
            "vote": self.vote,
            "blind": self.blind,
            "settings": self.settings.to_dict(),
            "seed": self.seed,
            "answer_a": self.answer_a,
            "answer_b": self.answer_b,
            "session": self.session,
        }

    @classmethod
    def from_record(cls, record: Any, where: str = "") -> Vote:
        """The vote a JSON record holds; ``where`` (such as ``votes.jsonl:3``) starts every error message."""
        prefix = f"{where}: " if where else ""
        if not isinstance(record, Mapping):
            raise VoteError(f"{prefix}a vote must be a JSON object (got {type(record).__name__})")
        missing = [name for name in _FIELDS if name not in record]
        if missing:
            raise VoteError(f"{prefix}field {missing[0]!r} is missing (a vote has: {', '.join(_FIELDS)})")
        unknown = sorted(str(k) for k in record if k not in _FIELDS)
        if unknown:
            raise VoteError(f"{prefix}unknown field {unknown[0]!r} (a vote has: {', '.join(_FIELDS)})")
        settings = record["settings"]
        if not isinstance(settings, Mapping):
            raise VoteError(f"{prefix}field 'settings' must be an object of generation settings")
        names = [f.name for f in fields(_settings_type())]
        absent = [n for n in names if n not in settings]
        if absent:
            raise VoteError(f"{prefix}field 'settings' lacks {absent[0]!r} (it holds: {', '.join(names)})")
        vote = object.__new__(cls)
        for name in _FIELDS:
            object.__setattr__(vote, name, record[name])
        _check_vote(vote, prefix)
        return vote


def _text(prefix: str, name: str, value: Any, blank_ok: bool = False) -> None:
    if not isinstance(value, str):
        raise VoteError(f"{prefix}field {name!r} must be text (got {type(value).__name__})")
    if not blank_ok and not value.strip():
        raise VoteError(f"{prefix}field {name!r} is empty")
    if has_lone_surrogate(value):
        raise VoteError(f"{prefix}field {name!r} holds a lone surrogate (text no file can hold)")


def _check_vote(vote: Vote, prefix: str) -> None:
    """Check every field of ``vote`` (normalising ``settings`` and ``seed`` in place); raise VoteError."""
    set_ = object.__setattr__
    time = vote.time
    _text(prefix, "time", time)
    try:
        moment = datetime.fromisoformat(time[:-1] + "+00:00" if time.endswith(("Z", "z")) else time)
    except ValueError:
        raise VoteError(
            f"{prefix}field 'time' must be ISO-8601 UTC such as 2025-05-01T12:34:56Z (got {time!r})"
        ) from None
    if moment.utcoffset() is None or moment.utcoffset().total_seconds() != 0:
        raise VoteError(f"{prefix}field 'time' must be in UTC, ending in Z or +00:00 (got {time!r})")
    _text(prefix, "prompt", vote.prompt)
    for side in ("a", "b"):
        name = getattr(vote, side)
        _text(prefix, side, name)
        if name != name.strip() or "\n" in name:
            raise VoteError(f"{prefix}field {side!r} must be a variant name without outer spaces or newlines")
    if vote.a == vote.b:
        raise VoteError(f"{prefix}a vote of a variant against itself ({vote.a!r}) is refused")
    if not isinstance(vote.vote, str) or vote.vote not in VOTES:
        raise VoteError(f"{prefix}field 'vote' must be one of {', '.join(VOTES)} (got {vote.vote!r})")
    if not isinstance(vote.blind, bool):
        raise VoteError(f"{prefix}field 'blind' must be true or false (got {vote.blind!r})")
    _text(prefix, "answer_a", vote.answer_a, blank_ok=True)
    _text(prefix, "answer_b", vote.answer_b, blank_ok=True)
    settings_type = _settings_type()
    settings = vote.settings
    if not isinstance(settings, settings_type):
        if not isinstance(settings, Mapping):
            raise VoteError(
                f"{prefix}field 'settings' must be generation settings (got {type(settings).__name__})"
            )
        names = {f.name for f in fields(settings_type)}
        unknown = sorted(str(k) for k in settings if k not in names)
        if unknown:
            raise VoteError(f"{prefix}field 'settings' has an unknown setting {unknown[0]!r}")
        try:
            settings = settings_type(**settings)
        except ViChatError as e:
            raise VoteError(f"{prefix}field 'settings': {e}") from None
        set_(vote, "settings", settings)
    seed = vote.seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise VoteError(f"{prefix}field 'seed' must be a whole number >= 0 or null (got {seed!r})")
    if settings.seed is not None:
        if seed is None:
            set_(vote, "seed", settings.seed)
        elif seed != settings.seed:
            raise VoteError(f"{prefix}field 'seed' is {seed} but settings.seed is {settings.seed}")
    session = vote.session
    if session is not None and (not isinstance(session, str) or not _SESSION.fullmatch(session)):
        raise VoteError(
            f"{prefix}field 'session' must be null or a short id (1-64 letters, digits, _ . : -; got {session!r})"
        )


# One lock per process for threads, an flock on the log for processes (and for threads with their own fds).
_THREADS = threading.Lock()


def record_vote(path: str | os.PathLike[str], vote: Vote) -> dict:
    """Append ``vote`` to the JSONL log at ``path`` (folders created) and return the record written.

    Appenders in other threads and processes wait for each other on an exclusive lock of the file, so lines
    never interleave; a torn last line (a killed writer) is cut off first, and the line is fsynced.
    """
    if not isinstance(vote, Vote):
        raise VoteError(f"record_vote takes a Vote (got {type(vote).__name__})")
    path = Path(path)
    if path.is_dir():
        raise VoteError(f"{path} is a folder: give the votes log a file name such as votes.jsonl")
    record = vote.to_record()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _THREADS:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with JsonlAppender(path) as out:  # repairs a torn tail, then appends one flushed line
                out.write(record)
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
    return record


def read_votes(path: str | os.PathLike[str]) -> tuple[list[Vote], list[str]]:
    """The valid votes of ``path`` and one ``file:line: what is wrong`` per bad line (skipped, never raised).

    A missing file has no votes. A last line cut short by a writer that is (or was) busy is skipped silently,
    as :func:`vichat.jsonl.read_records` does: the next writer removes it.
    """
    path = Path(path)
    if not path.exists():
        return [], []
    if path.is_dir():
        raise VoteError(f"{path} is a folder, not a votes log: pass the votes.jsonl file")
    votes: list[Vote] = []
    problems: list[str] = []
    for number, _, record in log_lines(path):
        where = f"{path}:{number}"
        if record is None:
            problems.append(f"{where}: not a JSON object; fix or delete this line")
            continue
        try:
            votes.append(Vote.from_record(record, where))
        except VoteError as e:
            problems.append(str(e))
    return votes, problems


# ---------------------------------------------------------------------------------------------- arithmetic


def wilson(score: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for ``score`` successes in ``n`` trials (a tie may count half).

    (0, 1) when there are no trials.
    """
    if n <= 0:
        return 0.0, 1.0
    p = score / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    denom = 1 + z2 / n
    return max(0.0, (centre - spread) / denom), min(1.0, (centre + spread) / denom)


def _points(vote: str) -> float:
    """What side A takes from one vote: 1 for a win, 0.5 for a tie or both bad, 0 for a loss."""
    return 1.0 if vote == "a" else 0.0 if vote == "b" else 0.5


def fit_bradley_terry(
    points, prior: float = PRIOR_GAMES, start=None, tol: float = 1e-10, max_iter: int = 100_000
):
    """Log10 strengths (geometric mean 1) from ``points[i][j]``: what i took from j (a tie gives each half).

    The MM (Zermelo) iteration of the Bradley-Terry likelihood, where every two variants also get ``prior``
    virtual tied games: that keeps an undefeated (or winless) variant finite and puts variants that never
    met on one scale (the prior pulls them together). Converges from any ``start`` (log10 strengths).
    """
    import numpy as np

    points = np.asarray(points, dtype=float)
    k = len(points)
    if k < 2:
        return np.zeros(k)
    points = points + (prior / 2) * (1 - np.eye(k))
    games = points + points.T
    taken = points.sum(axis=1)
    strength = np.ones(k) if start is None else np.power(10.0, np.asarray(start, dtype=float))
    for _ in range(max_iter):
        new = taken / (games / (strength[:, None] + strength[None, :])).sum(axis=1)
        new /= np.exp(np.log(new).mean())  # the likelihood ignores a common factor: fix it
        change = float(np.max(np.abs(np.log(new / strength))))
        strength = new
        if change < tol:
            break
    return np.log10(strength / np.exp(np.log(strength).mean()))


def _ratings(log_strength):
    """Elo-like ratings, centred so that their mean is CENTRE."""
    scaled = SCALE * log_strength
    return CENTRE + scaled - scaled.mean()


@dataclass(frozen=True)
class Row:
    """One variant on the leaderboard. Intervals are None when they were not computed (bootstrap 0)."""

    rank: int
    variant: str
    rating: float
    rating_low: float | None
    rating_high: float | None
    win_rate: float  # (wins + half of ties and of both-bad) / games
    win_low: float
    win_high: float
    games: int
    wins: int
    ties: int
    losses: int
    bad: int


@dataclass(frozen=True)
class Leaderboard:
    """Rows sorted by rating (best first), and head-to-head results between every two variants.

    ``matrix[x][y]``: the share of x's games against y that x took (ties half), None if they never met;
    ``games[x][y]``: how many votes they met in.
    """

    rows: list[Row]
    matrix: dict[str, dict[str, float | None]]
    games: dict[str, dict[str, int]]
    votes: int
    blind: int
    bootstrap: int
    seed: int
    prior: float

    def to_dict(self) -> dict:
        return {
            "votes": self.votes,
            "blind": self.blind,
            "bootstrap": self.bootstrap,
            "seed": self.seed,
            "prior": self.prior,
            "rows": [asdict(r) for r in self.rows],
            "matrix": self.matrix,
            "games": self.games,
        }


def leaderboard(
    votes: Iterable[Vote], bootstrap: int = 200, seed: int = 0, prior: float = PRIOR_GAMES
) -> Leaderboard:
    """Ratings, win rates and head-to-head results of ``votes`` (see the module docstring). Pure.

    ``bootstrap``: resamples of the votes for the rating intervals (0: none); ``seed`` makes them repeatable.
    "bad" (both bad) counts as a tie in ratings and win rates, and is counted apart as ``bad``.
    """
    import numpy as np

    from vichat.checks import non_negative_int, number

    votes = list(votes)
    for v in votes:
        if not isinstance(v, Vote):
            raise VoteError(f"leaderboard takes Vote objects (got {type(v).__name__}); see read_votes")
    bootstrap = non_negative_int("bootstrap", bootstrap)
    seed = non_negative_int("seed", seed)
    prior = number("prior", prior, above=0)
    names = sorted({v.a for v in votes} | {v.b for v in votes})
    index = {name: i for i, name in enumerate(names)}
    k, n = len(names), len(votes)
    first = np.array([index[v.a] for v in votes], dtype=int)
    second = np.array([index[v.b] for v in votes], dtype=int)
    taken = np.array([_points(v.vote) for v in votes], dtype=float)

    def points_of(which) -> np.ndarray:
        table = np.zeros((k, k))
        np.add.at(table, (first[which], second[which]), taken[which])
        np.add.at(table, (second[which], first[which]), 1.0 - taken[which])
        return table

    table = points_of(np.arange(n))
    estimate = fit_bradley_terry(table, prior)
    ratings = _ratings(estimate) if k else np.zeros(0)
    low = high = None
    if bootstrap and n:
        rng = np.random.default_rng(seed)
        samples = np.empty((bootstrap, k))
        for b in range(bootstrap):
            sample = points_of(rng.integers(0, n, size=n))
            samples[b] = _ratings(fit_bradley_terry(sample, prior, start=estimate))
        low, high = np.percentile(samples, [2.5, 97.5], axis=0)

    games = table + table.T
    counts = {name: {"wins": 0, "ties": 0, "losses": 0, "bad": 0} for name in names}
    for v in votes:
        outcome_a, outcome_b = {"a": ("wins", "losses"), "b": ("losses", "wins")}.get(v.vote, (None, None))
        for side, outcome in ((v.a, outcome_a), (v.b, outcome_b)):
            counts[side][outcome or ("ties" if v.vote == "tie" else "bad")] += 1
    order = sorted(range(k), key=lambda i: (-ratings[i], names[i]))
    rows = []
    for rank, i in enumerate(order, start=1):
        c = counts[names[i]]
        played = c["wins"] + c["ties"] + c["losses"] + c["bad"]
        score = c["wins"] + 0.5 * (c["ties"] + c["bad"])
        w_low, w_high = wilson(score, played)
        rows.append(
            Row(
                rank=rank,
                variant=names[i],
                rating=float(ratings[i]),
                rating_low=None if low is None else float(low[i]),
                rating_high=None if high is None else float(high[i]),
                win_rate=score / played,
                win_low=w_low,
                win_high=w_high,
                games=played,
                **c,
            )
        )
    ranked = [names[i] for i in order]
    matrix = {
        x: {
            y: (
                float(table[index[x], index[y]] / games[index[x], index[y]])
                if games[index[x], index[y]]
                else None
            )
            for y in ranked
            if y != x
        }
        for x in ranked
    }
    met = {x: {y: int(round(games[index[x], index[y]])) for y in ranked if y != x} for x in ranked}
    return Leaderboard(rows, matrix, met, n, sum(v.blind for v in votes), bootstrap, seed, prior)


# ---------------------------------------------------------------------------------------------- the report


def _interval(value: float, low: float | None, high: float | None, fmt: str) -> str:
    if low is None or high is None:
        return format(value, fmt)
    return f"{format(value, fmt)} [{format(low, fmt)}, {format(high, fmt)}]"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows[1:]]


def markdown(board: Leaderboard, source: str = "") -> str:
    """The leaderboard and the head-to-head matrix as Markdown."""
    lines = ["# ViChat arena", ""]
    where = f" from {source}" if source else ""
    intervals = (
        f"95% intervals from {board.bootstrap} bootstrap resamples of the votes (seed {board.seed})"
        if board.bootstrap
        else "no rating intervals (bootstrap 0)"
    )
    lines += [
        f"{board.votes} votes{where} ({board.blind} blind). Rating: Bradley-Terry on an Elo-like scale "
        f"(+{SCALE:g} = 10x the odds, mean {CENTRE:g}), {intervals}. Win rate: ties and both-bad count half, "
        "95% Wilson interval. W/T/L: wins / ties / losses; bad: both answers judged bad.",
        "",
    ]
    rows = [["rank", "variant", "rating [low, high]", "win rate [low, high]", "games", "W/T/L", "bad"]]
    for r in board.rows:
        rows.append(
            [
                str(r.rank),
                r.variant,
                _interval(r.rating, r.rating_low, r.rating_high, ".0f"),
                f"{100 * r.win_rate:.1f}% [{100 * r.win_low:.1f}%, {100 * r.win_high:.1f}%]",
                str(r.games),
                f"{r.wins}/{r.ties}/{r.losses}",
                str(r.bad),
            ]
        )
    lines += _table(rows)
    names = [r.variant for r in board.rows]
    if len(names) > 1:
        lines += ["", "## Head-to-head: share of the row's games against the column it took (games)", ""]
        grid = [["", *names]]
        for x in names:
            cells = []
            for y in names:
                share = board.matrix[x].get(y) if y != x else None
                cells.append("-" if share is None else f"{100 * share:.0f}% ({board.games[x][y]})")
            grid.append([x, *cells])
        lines += _table(grid)
    return "\n".join(lines) + "\n"


@dataclass
class ArenaArgs:
    votes: str = field(default=str(DEFAULT_VOTES), metadata={"help": "the votes log (JSON Lines)"})
    bootstrap: int = field(default=200, metadata={"help": "bootstrap resamples for the rating intervals"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap"})
    blind_only: bool = field(default=False, metadata={"help": "count only votes cast with names hidden"})
    out: str | None = field(
        default=None, metadata={"help": "also write the leaderboard to FILE.md or FILE.json"}
    )


def main(argv: Sequence[str] | None = None) -> int:
    from eval.cli import parse
    from vichat.checks import number
    from vichat.files import atomic_write_json, atomic_write_text, refuse_overwriting_inputs

    (args,) = parse(ArenaArgs, argv)
    bootstrap = number("--bootstrap", args.bootstrap, minimum=0, maximum=100_000, integer=True)
    seed = number("--seed", args.seed, minimum=0, integer=True)
    path = Path(args.votes)
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.suffix.lower() not in (".md", ".json"):
            raise ViChatError(f"--out {out}: the name must end in .md or .json")
        if out.is_dir():
            raise ViChatError(f"--out {out} is a folder: give a file name ending in .md or .json")
        refuse_overwriting_inputs([out], [path])
    if not path.exists():
        raise ViChatError(
            f"no votes log at {path}: vote in the app's Compare tab (blind mode), or pass --votes FILE"
        )
    votes, problems = read_votes(path)
    if not votes:
        if problems:
            raise ViChatError(
                f"{path} holds no valid votes ({len(problems)} bad lines); the first: {problems[0]}"
            )
        raise ViChatError(f"{path} holds no votes yet: vote in the app's Compare tab first")
    for problem in problems[:10]:
        print(f"warning: skipped {problem}", file=sys.stderr)
    if len(problems) > 10:
        print(f"warning: skipped {len(problems) - 10} more bad lines of {path}", file=sys.stderr)
    if args.blind_only:
        votes = [v for v in votes if v.blind]
        if not votes:
            raise ViChatError(f"{path} holds no blind votes (drop --blind-only to count them all)")
    board = leaderboard(votes, bootstrap=bootstrap, seed=seed)
    text = markdown(board, str(path))
    print(text, end="")
    if out is not None:
        if out.suffix.lower() == ".json":
            atomic_write_json(out, board.to_dict())
        else:
            atomic_write_text(out, text)
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from vichat.cli import run

    raise SystemExit(run(main))
