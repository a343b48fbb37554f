"""Atomic writes, input protection, output locks and the one number checker."""

from __future__ import annotations

import math
import multiprocessing
import os

import pytest

from vichat import checks
from vichat.errors import SettingsError, ViChatError
from vichat.files import (
    OutputBusyError,
    OutputLock,
    atomic_write_text,
    atomic_writer,
    refuse_overwriting_inputs,
)


def test_a_failed_atomic_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_writer(target) as fh:
        fh.write("new half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    fresh = tmp_path / "fresh.txt"
    atomic_write_text(fresh, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


def test_outputs_never_overwrite_inputs(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("x\n")
    link = tmp_path / "alias.jsonl"
    os.symlink(src, link)
    for out in (src, link, tmp_path / "." / "in.jsonl"):
        with pytest.raises(ViChatError, match="would overwrite the input"):
            refuse_overwriting_inputs([out], [src])
    refuse_overwriting_inputs([tmp_path / "other.jsonl"], [src])


def _hold(folder, ready, done):
    with OutputLock(folder, "holder"):
        ready.set()
        done.wait(30)


def test_a_second_writer_on_a_locked_folder_stops_with_a_message(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(tmp_path, ready, done))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(OutputBusyError, match=r"in use by holder \(pid"):
            OutputLock(tmp_path, "second").acquire()
    finally:
        done.set()
        proc.join(30)
    with OutputLock(tmp_path, "after"):  # released when the holder exits
        pass


@pytest.mark.parametrize("value", [math.nan, "nan", math.inf, "-inf", -1, "abc", None, True])
def test_numbers_refuse_nan_negative_and_garbage(value):
    with pytest.raises(SettingsError, match="--lr"):
        checks.number("--lr", value, minimum=0)


def test_number_bounds_and_integers():
    assert checks.number("--n", "3", minimum=1, integer=True) == 3
    assert checks.number("--t", 0.5, minimum=0, maximum=2) == 0.5
    with pytest.raises(SettingsError, match=r"must be > 0 \(got 0\)"):
        checks.positive("--timeout", 0)
    with pytest.raises(SettingsError, match="whole number"):
        checks.positive_int("--batch", 1.5)
    with pytest.raises(SettingsError, match=r"in \[0, 2\]"):
        checks.number("--t", 3, minimum=0, maximum=2)


def test_jobs_writing_their_own_files_can_share_a_folder(tmp_path):
    with (
        OutputLock(tmp_path, "a", name=".a.jsonl.lock"),
        OutputLock(tmp_path, "b", name=".b.jsonl.lock"),
        pytest.raises(OutputBusyError),
    ):
        OutputLock(tmp_path, "a again", name=".a.jsonl.lock").acquire()
