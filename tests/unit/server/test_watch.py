"""Noticing policy file changes: ConfigMap symlink swaps, renames over the file, in-place edits, a missing file."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

import pytest

from ext_proc.server.watch import POLL_INTERVAL, ChangeDetector, watch

POLICY = "models: {}\n"


def _write(path: Path, text: str) -> None:
    path.write_text(text)


class SwitchableStat:
    """os.stat, except that it raises ``error`` while one is set; counts its calls."""

    def __init__(self) -> None:
        self.error: OSError | None = None
        self.calls = 0
        self.called = asyncio.Event()  # binds to a loop only when first waited on
        self.wait_for_calls = 0

    def __call__(self, path: str) -> os.stat_result:
        self.calls += 1
        if self.calls >= self.wait_for_calls:
            self.called.set()
        if self.error is not None:
            raise self.error
        return os.stat(path)

    async def polls(self, n: int) -> None:
        """Wait until ``n`` more stat calls (polls) have happened."""
        self.wait_for_calls = self.calls + n
        self.called.clear()
        await asyncio.wait_for(self.called.wait(), timeout=5)


# --- the detector -------------------------------------------------------------------------------------------------


def test_unchanged_file_never_reports(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, POLICY)
    detector = ChangeDetector(path)
    assert not any(detector.poll() for _ in range(10))
    assert not detector.missing


def test_configmap_data_symlink_swap_is_a_change(tmp_path: Path) -> None:
    old = tmp_path / "..2026_12_05_10_00_00.123"
    old.mkdir()
    _write(old / "policy.yaml", POLICY)
    (tmp_path / "..data").symlink_to(old.name)
    path = tmp_path / "policy.yaml"
    path.symlink_to("..data/policy.yaml")
    detector = ChangeDetector(path)
    assert not detector.poll()

    # What the kubelet does: new timestamped dir, a new ..data_tmp symlink renamed over ..data, old dir deleted.
    # Same content, same size: only what the path resolves to differs.
    new = tmp_path / "..2026_12_05_10_05_00.456"
    new.mkdir()
    _write(new / "policy.yaml", POLICY)
    (tmp_path / "..data_tmp").symlink_to(new.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    shutil.rmtree(old)

    assert path.read_text() == POLICY and (tmp_path / "..data").readlink() == Path(new.name)
    assert not detector.poll()  # first sighting
    assert detector.poll()  # settled
    assert not detector.poll()  # once only
    assert not detector.missing


def test_rename_over_the_file_is_a_change(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, POLICY)
    detector = ChangeDetector(path)
    before = path.stat().st_ino
    tmp = tmp_path / "policy.yaml.tmp"
    _write(tmp, POLICY)
    os.replace(tmp, path)
    assert path.stat().st_ino != before
    assert [detector.poll() for _ in range(4)] == [False, True, False, False]


def test_new_inode_alone_is_a_change(tmp_path: Path) -> None:
    """Same size and same times (as on a filesystem with coarse timestamps): the inode still tells."""
    path = tmp_path / "policy.yaml"
    _write(path, POLICY)
    base = path.stat()

    def same_times_stat(p: str) -> os.stat_result:
        st = os.stat(p)
        return os.stat_result(tuple(st), {"st_mtime_ns": base.st_mtime_ns, "st_ctime_ns": base.st_ctime_ns})

    detector = ChangeDetector(path, stat=same_times_stat)
    tmp = tmp_path / "policy.yaml.tmp"
    _write(tmp, POLICY)
    os.replace(tmp, path)
    assert path.stat().st_ino != base.st_ino and path.stat().st_size == base.st_size
    assert [detector.poll() for _ in range(3)] == [False, True, False]


def test_in_place_edit_reported_once_settled_not_while_still_moving(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, POLICY)
    detector = ChangeDetector(path)
    inode = path.stat().st_ino

    with path.open("w") as f:  # the same inode, truncated and rewritten, as ``>`` or an editor does
        f.write("models:\n")
        f.flush()
        assert not detector.poll()  # half-written
        f.write("  m1: {}\n")
        f.flush()
        assert not detector.poll()  # still moving since the last poll: not settled
        f.write("  m2: {}\n")
    assert path.stat().st_ino == inode
    assert not detector.poll()  # moved again
    assert detector.poll()  # held still for two polls: settled
    assert not detector.poll()  # reported exactly once

    # A same-size rewrite is still seen, by its mtime.
    text = path.read_text()
    _write(path, text.replace("m1", "m9"))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert [detector.poll() for _ in range(3)] == [False, True, False]


def test_missing_file_is_not_a_change_and_coming_back_is(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, POLICY)
    detector = ChangeDetector(path)
    path.unlink()
    assert not detector.poll()
    assert detector.missing
    assert not detector.poll()
    assert detector.missing

    _write(path, POLICY + "# back\n")
    assert not detector.poll()
    assert not detector.missing  # cleared as soon as it is readable again
    assert detector.poll()
    assert not detector.poll()


def test_missing_between_two_sightings_restarts_settling(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, POLICY)
    stat = SwitchableStat()
    detector = ChangeDetector(path, stat=stat)
    _write(path, POLICY + "# new\n")
    assert not detector.poll()  # first sighting
    stat.error = FileNotFoundError(str(path))
    assert not detector.poll()
    stat.error = None
    assert not detector.poll()  # seen again, but not on two consecutive polls
    assert detector.poll()


def test_unreadable_file_is_missing_not_a_change_and_same_file_back_is_no_change(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, POLICY)
    stat = SwitchableStat()
    detector = ChangeDetector(path, stat=stat)
    for error in (PermissionError(13, "denied"), OSError(116, "stale file handle")):
        stat.error = error
        assert not detector.poll()
        assert detector.missing
    stat.error = None
    assert [detector.poll() for _ in range(3)] == [False, False, False]  # the baseline file, unchanged
    assert not detector.missing


def test_missing_at_start_then_created_is_a_change(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    detector = ChangeDetector(path)
    assert detector.missing
    assert not detector.poll()
    _write(path, POLICY)
    assert [detector.poll() for _ in range(3)] == [False, True, False]
    assert not detector.missing


def test_poll_interval_leaves_time_to_settle_within_two_seconds() -> None:
    assert 3 * POLL_INTERVAL < 2  # a sighting, the settling poll, and one poll's lag for the change itself


# --- the asyncio loop ---------------------------------------------------------------------------------------------


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_watch_awaits_on_change_after_a_change(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, POLICY)
    changed = asyncio.Event()
    calls = 0

    async def on_change() -> None:
        nonlocal calls
        calls += 1
        changed.set()

    task = asyncio.create_task(watch(path, on_change, 0.02, detector=ChangeDetector(path)))
    tmp = tmp_path / "tmp"
    _write(tmp, POLICY + "# v2\n")
    os.replace(tmp, path)
    await asyncio.wait_for(changed.wait(), timeout=5)
    await asyncio.sleep(0.1)  # several more polls: the same change is not reported again
    assert calls == 1
    assert not task.done()
    await _stop(task)


async def test_watch_goes_on_after_on_change_fails(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, POLICY)
    calls: list[str] = []
    first, second = asyncio.Event(), asyncio.Event()

    async def on_change() -> None:
        calls.append(path.read_text())
        if len(calls) == 1:
            first.set()
            raise ValueError("bad policy")
        second.set()

    task = asyncio.create_task(watch(path, on_change, 0.02, detector=ChangeDetector(path)))
    with caplog.at_level(logging.ERROR, logger="modelguard.reload"):
        _write(path, POLICY + "# v2\n")
        await asyncio.wait_for(first.wait(), timeout=5)
        _write(path, POLICY + "# v3, longer\n")
        await asyncio.wait_for(second.wait(), timeout=5)
    assert calls == [POLICY + "# v2\n", POLICY + "# v3, longer\n"]
    failures = [r for r in caplog.records if getattr(r, "event", None) == "policy_watch_failed"]
    assert len(failures) == 1 and failures[0].exc_info is not None
    await _stop(task)


async def test_watch_logs_missing_once_per_disappearance(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, POLICY)
    stat = SwitchableStat()
    changed = asyncio.Event()

    async def on_change() -> None:
        changed.set()

    def missing_logs() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", None) == "policy_file_missing"]

    task = asyncio.create_task(watch(path, on_change, 0.01, detector=ChangeDetector(path, stat=stat)))
    with caplog.at_level(logging.WARNING, logger="modelguard.reload"):
        path.unlink()
        await stat.polls(5)
        assert len(missing_logs()) == 1
        assert missing_logs()[0].levelno == logging.WARNING
        assert getattr(missing_logs()[0], "path", None) == str(path)
        assert not changed.is_set()  # missing is not a change

        _write(path, POLICY + "# back\n")
        await asyncio.wait_for(changed.wait(), timeout=5)
        path.unlink()
        await stat.polls(5)
        assert len(missing_logs()) == 2  # a second disappearance is logged again, once
    await _stop(task)


def test_a_file_that_never_holds_still_is_reported_after_max_unsettled_polls(tmp_path: Path) -> None:
    from ext_proc.server.watch import MAX_UNSETTLED_POLLS

    path = tmp_path / "policy.yaml"
    path.write_text("v0")
    detector = ChangeDetector(path)
    seen = []
    for index in range(1, 2 * MAX_UNSETTLED_POLLS + 1):
        path.write_text(f"v{index}" + "x" * index)  # a new size every time: never the same twice
        seen.append(detector.poll())
    assert seen.index(True) == MAX_UNSETTLED_POLLS - 1
    assert seen.count(True) == 2
