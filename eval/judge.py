"""Pairwise judging by an OpenAI-compatible chat model (GPT-4 in the paper), cached and resumable.

    python -m eval.judge --set general --variants Bloomz,Bloomz-Chat [--reference reference]
    python -m eval.judge --set general --pair Bloomz,Bloomz-Chat
        [--judge-model gpt-4] [--single-order] [--concurrency 8] [--dry-run] [--max-calls N] [--price IN,OUT]
        [--base-url URL] [--timeout S] [--max-retries N] [--retries N] [--backoff S]

Paper mode (``--variants``): each variant against the reference, reference = Assistant 1, model =
Assistant 2. Head-to-head (``--pair A,B``): A against B, reported as wins/ties/losses. Beyond the paper,
both presentation orders are judged and averaged unless ``--single-order`` (the paper's way).

Every verdict is appended to ``<out-dir>/judgments/<set>/<judge>.jsonl`` as it arrives, keyed by a hash
of (question id, question, the two answers, order, judge model, prompt version, judge endpoint): a killed
run resumes, a rerun makes zero calls, a changed answer or prompt is judged afresh, and verdicts from one
server (``--base-url``) are never reused for another that gives the same model name. An answer whose
scores cannot be read is kept apart with its raw text and reported, never cached as a verdict nor scored
as zero: a rerun asks again. The folder is locked while a run writes, so a second run on it stops at once
instead of paying for every verdict twice. A run that leaves failed or unreadable verdicts exits 1.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from eval import cost
from eval.answers import REFERENCE, answers_path, load_answers
from eval.client import (
    ChatClient,
    ClientConfig,
    JudgeRequestError,
    JudgeUnavailableError,
    Stopped,
    normalise_endpoint,
)
from eval.parse import parse_scores
from eval.scoring import summarize, win_tie_loss
from eval.sets import EvalSet, load_eval_set
from eval.verdicts import (
    FORWARD,
    SWAPPED,
    Collected,
    JudgePrompt,
    JudgmentCache,
    Task,
    build_tasks,
    collect,
    judgments_path,
    pending,
)
from vichat import checks
from vichat.errors import ViChatError
from vichat.files import OutputLock


@dataclass
class RunResult:
    called: int = 0
    unparsable: list[Task] = field(default_factory=list)
    failed: list[tuple[Task, str]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


def judge_one(task: Task, client: ChatClient, judge_model: str, prompt: JudgePrompt, stop=None) -> dict:
    """Ask the judge about one task; the verdict record (scores None when unparsable).

    The record keeps the endpoint's reported ``usage`` and the ``estimate`` eval.cost made for the same call,
    so eval.diagnostics can set what was paid beside what was expected."""
    messages = prompt.messages(task.question, task.answer_1, task.answer_2)
    reply = client.complete(
        judge_model, messages, temperature=prompt.temperature, max_tokens=prompt.max_tokens, stop=stop
    )
    scores = parse_scores(reply.text)
    assistant_1, assistant_2 = task.assistants
    estimated = cost.estimate([messages], None)  # what the plan counted for this call, kept beside the usage
    return {
        "key": task.key,
        "question_id": task.question_id,
        "category": task.category,
        "order": task.order,
        "assistant_1": assistant_1,
        "assistant_2": assistant_2,
        "judge_model": judge_model,
        "prompt_version": prompt.version,
        "endpoint": task.endpoint,
        "scores": list(scores) if scores else None,
        "raw": reply.text,
        "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens},
        "estimate": {
            "prompt_tokens": estimated.prompt_tokens,
            "completion_tokens": estimated.completion_tokens,
        },
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_judgments(
    todo: Sequence[Task],
    cache: JudgmentCache,
    client: ChatClient,
    judge_model: str,
    prompt: JudgePrompt,
    *,
    concurrency: int = 8,
    progress: bool = True,
) -> RunResult:
    """Judge ``todo`` with at most ``concurrency`` requests in flight, saving each verdict as it arrives.

    Each verdict is keyed by the judge that really gave it: a task planned for another endpoint, model or
    prompt is re-keyed for ``client``'s (and skipped when that judge's verdict is cached already).
    A request the endpoint rejects on its own (HTTP 400) is reported in ``failed``; an answer with no
    readable scores in ``unparsable`` (kept apart, not cached). When the endpoint is out of reach after
    every retry, keeps sending garbage, or refuses all requests (bad key, unknown model), the run stops: no
    new request starts, those in flight finish and are saved, and the error is raised.
    """
    concurrency = checks.number("--concurrency", concurrency, minimum=1, maximum=1024, integer=True)
    endpoint = getattr(client, "endpoint", None) or normalise_endpoint(client.config.endpoint)
    todo = pending([t.for_judge(endpoint, judge_model, prompt.version) for t in todo], cache)
    result = RunResult()
    stop = threading.Event()
    fatal: ViChatError | None = None
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="judge")

    def work(task: Task) -> dict | None:
        if stop.is_set():
            return None
        record = judge_one(task, client, judge_model, prompt, stop)
        cache.add(record)
        return record

    try:
        futures = {pool.submit(work, task): task for task in todo}
        with tqdm(total=len(futures), desc=f"judging ({judge_model})", disable=not progress) as bar:
            for future in as_completed(futures):
                task = futures[future]
                try:
                    record = future.result()
                except (CancelledError, Stopped):
                    continue
                except JudgeRequestError as e:
                    if not e.fatal:
                        result.failed.append((task, str(e)))
                        continue
                    fatal = fatal or e
                except JudgeUnavailableError as e:
                    fatal = fatal or e
                else:
                    if record is not None:
                        result.called += 1
                        result.prompt_tokens += record["usage"]["prompt_tokens"]
                        result.completion_tokens += record["usage"]["completion_tokens"]
                        if record["scores"] is None:
                            result.unparsable.append(task)
                    bar.update()
                    continue
                stop.set()
                for other in futures:
                    other.cancel()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        cache.close()
    if fatal is not None:
        saved = f"stopped; {result.called} new verdicts this run, {len(cache)} in all saved in {cache.path}"
        message = f"{fatal} — {saved}; run the same command again to continue"
        if isinstance(fatal, JudgeRequestError):
            raise JudgeRequestError(message, fatal=True) from None
        raise JudgeUnavailableError(message) from None
    return result


def comparisons_for(
    variants: str | None, pair: str | None, reference: str
) -> tuple[list[tuple[str, str]], bool]:
    """The comparisons a command asks for, and whether they are head-to-head."""
    from eval.cli import names

    if bool(variants) == bool(pair):
        raise ViChatError(
            "give either --variants A,B (each against the reference) or --pair A,B (head-to-head)"
        )
    if pair:
        sides = names(pair)
        if len(sides) != 2 or sides[0] == sides[1]:
            raise ViChatError(
                f"--pair takes two different variants, e.g. --pair Bloomz,Bloomz-Chat; got {pair!r}"
            )
        return [(sides[0], sides[1])], True
    chosen = [v for v in names(variants) if v != reference]
    if not chosen:
        raise ViChatError(f"--variants names no variant besides the reference {reference!r}")
    return [(reference, v) for v in chosen], False


def summary_lines(eval_set: EvalSet, collected: Collected, head_to_head: bool) -> list[str]:
    lines = []
    for (first, second), pairs in collected.pairs.items():
        if head_to_head:
            wtl = win_tie_loss(pairs)
            lines.append(
                f"{first} vs {second}: {first} wins {wtl.first_wins}, ties {wtl.ties}, "
                f"{second} wins {wtl.second_wins} ({len(pairs)} questions)"
            )
            continue
        s = summarize(pairs, eval_set.categories)
        total = "-" if s.total is None else f"{s.total:.2f}"
        ratio = "-" if s.ratio_of_sums is None else f"{s.ratio_of_sums:.2f}"
        lines.append(
            f"{second} vs {first} (=100): {total} (sample-weighted), {ratio} (ratio of sums), "
            f"{s.scored}/{len(eval_set)} questions scored"
        )
    for task, raw in collected.unparsable[:10]:
        snippet = " ".join(raw.split())[:80]
        lines.append(
            f"  unparsable: {task.question_id} {'/'.join(task.assistants)} {task.order}: {snippet!r}"
        )
    if len(collected.unparsable) > 10:
        lines.append(f"  ... and {len(collected.unparsable) - 10} more unparsable verdicts")
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass
class JudgeArgs:
    set: str = field(default="general", metadata={"help": "general, medical, or a JSONL path"})
    variants: str | None = field(default=None, metadata={"help": "paper mode: each against the reference"})
    pair: str | None = field(default=None, metadata={"help": "head-to-head: A,B"})
    reference: str = field(
        default=REFERENCE, metadata={"help": "the reference assistant's answers (variant name)"}
    )
    judge_model: str = field(default="gpt-4", metadata={"help": "the judge model's name at the endpoint"})
    single_order: bool = field(default=False, metadata={"help": "the paper's way: one order only"})
    concurrency: int = 8
    dry_run: bool = field(default=False, metadata={"help": "print the plan and cost estimate, call nothing"})
    max_calls: int | None = field(
        default=None, metadata={"help": "stop after this many calls (rerun continues)"}
    )
    retry_unparsable: bool = field(
        default=False, metadata={"help": "kept for old scripts: unparsable answers are always asked again"}
    )
    price: str | None = field(default=None, metadata={"help": "IN,OUT USD per 1M tokens for the judge model"})
    out_dir: str = "runs/eval"


@dataclass
class JudgePlan:
    """What a judge run asks: every verdict wanted, those not yet cached, and what asking them costs."""

    eval_set: EvalSet
    comparisons: list[tuple[str, str]]
    orders: tuple[str, ...]
    judge_model: str
    prompt: JudgePrompt
    price: tuple[float, float] | None
    tasks: list[Task]
    lacking: dict[tuple[str, str], int]
    cache: JudgmentCache
    todo: list[Task]

    def capped(self, max_calls: int | None = None) -> list[Task]:
        return self.todo if max_calls is None else self.todo[:max_calls]

    def estimate(self, max_calls: int | None = None) -> cost.CostEstimate:
        messages = (self.prompt.messages(t.question, t.answer_1, t.answer_2) for t in self.capped(max_calls))
        return cost.estimate(messages, self.price)


def _answers(out_dir: str, eval_set: EvalSet, variant: str, stand_in: bool) -> dict[str, str]:
    if not stand_in or variant == REFERENCE:
        return load_answers(out_dir, eval_set, variant)
    found = (
        load_answers(out_dir, eval_set, variant)
        if answers_path(out_dir, eval_set.name, variant).exists()
        else {}
    )
    # each variant's stand-in differs (by its name), so two variants' stand-ins are not taken for one verdict
    return {q.id: found.get(q.id, f"{q.reference}\n({variant})") for q in eval_set.questions}


def plan(
    eval_set: EvalSet,
    comparisons: list[tuple[str, str]],
    out_dir: str,
    judge_model: str = "gpt-4",
    *,
    single_order: bool = False,
    retry_unparsable: bool = False,
    price: tuple[float, float] | None = None,
    stand_in: bool = False,
    endpoint: str | None = None,
) -> JudgePlan:
    """The tasks for ``comparisons`` on ``eval_set`` from the answers in ``out_dir``, checked against the cache.

    ``endpoint``: the judge's base URL the verdicts must come from (None: $OPENAI_BASE_URL, else OpenAI).
    ``stand_in``: for an estimate before answering, a question a variant has not answered yet counts with the
    reference answer in its place (about as long), instead of being left out.
    """
    prompt = JudgePrompt.load()
    sides = {side for c in comparisons for side in c}
    answers = {v: _answers(out_dir, eval_set, v, stand_in) for v in sides}
    orders = (FORWARD,) if single_order else (FORWARD, SWAPPED)
    tasks, lacking = build_tasks(
        eval_set, answers, comparisons, orders, judge_model, prompt.version, endpoint=endpoint
    )
    cache = JudgmentCache(judgments_path(out_dir, eval_set.name, judge_model))
    todo = pending(tasks, cache, retry_unparsable)
    return JudgePlan(eval_set, comparisons, orders, judge_model, prompt, price, tasks, lacking, cache, todo)


def lock_for(out_dir: str | Path, set_name: str, job: str = "eval.judge") -> OutputLock:
    """The lock a judge run holds on ``<out-dir>/judgments/<set>`` (the UI should hold it too)."""
    return OutputLock(judgments_path(out_dir, set_name, "x").parent, job)


def main(argv=None) -> int:
    from eval.cli import parse

    args, client_config = parse((JudgeArgs, ClientConfig), argv)
    client_config.validate()
    args.concurrency = checks.number("--concurrency", args.concurrency, minimum=1, maximum=1024, integer=True)
    args.max_calls = checks.number("--max-calls", args.max_calls, minimum=0, integer=True, allow_none=True)
    if not args.judge_model.strip():
        raise ViChatError("--judge-model is empty: name the judge model, e.g. --judge-model gpt-4")
    if not args.dry_run:
        client_config.key()  # a missing key is said before any work
    comparisons, head_to_head = comparisons_for(args.variants, args.pair, args.reference)
    price = cost.price_for(args.judge_model, args.price)
    eval_set = load_eval_set(args.set)
    with contextlib.ExitStack() as stack:
        if not args.dry_run:  # a dry run writes nothing, so it may look while a run goes on
            stack.enter_context(lock_for(args.out_dir, eval_set.name))
        return _judge(args, client_config, eval_set, comparisons, head_to_head, price)


def _judge(args, client_config, eval_set, comparisons, head_to_head, price) -> int:
    p = plan(
        eval_set, comparisons, args.out_dir, args.judge_model,
        single_order=args.single_order, price=price, endpoint=client_config.endpoint,
    )  # fmt: skip
    capped = p.capped(args.max_calls)

    for (first, second), n in p.lacking.items():
        if n == len(eval_set):
            raise ViChatError(
                f"no question of the {eval_set.name} set has answers from both {first} and {second}: run "
                f"python -m eval.answers --variants {first},{second} --set {args.set} first"
            )
        if n:
            print(
                f"note: {n} of {len(eval_set)} questions lack an answer from {first} or {second}; judging the rest"
            )
    print(
        f"{eval_set.name}: {len(p.tasks)} verdicts wanted ({_count(len(comparisons), 'comparison')} x "
        f"{_count(len(p.orders), 'order')}), {len(p.tasks) - len(p.todo)} cached, {len(p.todo)} to ask "
        f"{client_config.normalised_endpoint} (prompt {p.prompt.version})"
    )
    print("estimate: " + p.estimate(args.max_calls).describe(args.judge_model))
    if args.dry_run:
        print("dry run: no calls made")
        return 0
    result = RunResult()
    if capped:
        client = ChatClient(client_config)
        result = run_judgments(
            capped, p.cache, client, args.judge_model, p.prompt, concurrency=args.concurrency
        )
    print(f"{result.called} calls made, {cost.spent(result.prompt_tokens, result.completion_tokens, price)}")
    for task, message in result.failed:
        print(
            f"  failed: {task.question_id} {'/'.join(task.assistants)} {task.order}: {message}",
            file=sys.stderr,
        )
    for line in summary_lines(eval_set, collect(p.tasks, p.cache), head_to_head):
        print(line)
    if len(capped) < len(p.todo):
        print(
            f"stopped after {len(capped)} calls (--max-calls); {len(p.todo) - len(capped)} left: run again to continue"
        )
    if result.failed or result.unparsable:
        print(
            f"incomplete: {_count(len(result.failed), 'request')} failed and "
            f"{_count(len(result.unparsable), 'answer')} had no readable scores, of {len(capped)} asked; "
            "none of them was cached: run the same command again to ask them again",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    from vichat.cli import run

    raise SystemExit(run(main))
