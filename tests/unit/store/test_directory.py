"""The state directory: atomic writes, corrupt files ignored and kept, writers that keep each other's changes."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ext_proc.admin import messages
from ext_proc.core.canary.run import Action, CanaryOrder
from ext_proc.core.forcing import ForceMode, ForceOrder
from ext_proc.store import CANARY_KEY, DirectoryStore, StoreError, default_state_dir
from ext_proc.store.base import order_from_record
from ext_proc.store.directory import FILE_NAME

OPEN = ForceOrder(ForceMode.FORCED_OPEN, "gpu node hot", "sre@host", 1_800_000_000.0, 1_800_000_600.0)
CLOSED = ForceOrder(ForceMode.FORCED_CLOSED, "", "ops", 1_800_000_001.0)
KEY = ("recommender", "primary")


def test_an_order_written_is_read_back_by_another_store(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "state")
    store.prepare()
    store.save(KEY, OPEN)
    store.save(("ranker", "light"), CLOSED)
    assert DirectoryStore(tmp_path / "state").load() == {KEY: OPEN, ("ranker", "light"): CLOSED}
    store.save(KEY, None)
    assert DirectoryStore(tmp_path / "state").load() == {("ranker", "light"): CLOSED}
    assert oct((tmp_path / "state").stat().st_mode & 0o777) == oct(0o700)


def test_replacing_removes_only_the_order_it_names(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    store.save(KEY, CLOSED)
    store.save(KEY, None, replacing=OPEN)  # an expiry of an order since replaced
    assert store.load() == {KEY: CLOSED}
    store.save(KEY, None, replacing=CLOSED)
    assert store.load() == {}


def test_the_version_changes_with_each_write(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    assert store.version() is None
    store.save(KEY, OPEN)
    first = store.version()
    store.save(KEY, CLOSED)
    assert store.version() not in (None, first)


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DirectoryStore(tmp_path)
    store.save(KEY, OPEN)

    def broken_fsync(_descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StoreError, match="No space left on device"):
        store.save(KEY, CLOSED)
    monkeypatch.undo()
    assert store.load() == {KEY: OPEN}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


WRITER = """
import sys
from ext_proc.core.forcing import ForceMode, ForceOrder
from ext_proc.store import DirectoryStore
store = DirectoryStore(sys.argv[1])
store.prepare()
print("ready", flush=True)
i = 0
while True:
    i += 1
    store.save(("m", "t"), ForceOrder(ForceMode.FORCED_OPEN, "x" * (i % 400), "w", float(i)))
"""


def test_kill_9_in_the_middle_of_writes_leaves_a_whole_file(tmp_path: Path) -> None:
    for attempt in range(5):
        directory = tmp_path / f"run{attempt}"
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(directory)], stdout=subprocess.PIPE)
        assert writer.stdout is not None and writer.stdout.readline() == b"ready\n"
        time.sleep(0.05 + 0.03 * attempt)
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        orders = DirectoryStore(directory).load()
        assert orders is not None and list(orders) == [("m", "t")]  # never empty, never half a file
        assert json.loads((directory / FILE_NAME).read_text())["version"] == 1


def test_a_corrupt_file_is_logged_ignored_then_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / FILE_NAME).write_text('{"orders": [{"model": "m", "tier"')
    store = DirectoryStore(tmp_path)
    with caplog.at_level(logging.ERROR, "modelguard.store"):
        assert store.load() is None
    assert any(getattr(r, "event", "") == "state_file_ignored" for r in caplog.records)
    store.save(KEY, OPEN)
    assert store.load() == {KEY: OPEN}
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(FILE_NAME + ".corrupt-")]
    assert len(aside) == 1 and aside[0].read_text().startswith('{"orders"')


@pytest.mark.parametrize(
    "content",
    [b"", b"\xff\xfe", b"[]", b'{"orders": 3}', b"null", b"{" * 100_000],
)
def test_files_of_any_shape_never_raise(tmp_path: Path, content: bytes) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    assert DirectoryStore(tmp_path).load() is None


def test_a_bad_record_is_skipped_and_the_others_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = {"model": "m", "tier": "t", "mode": "forced_open", "reason": "", "caller": "c", "since": 1.0, "until": None}
    bad = [
        {**good, "mode": "auto"},
        {**good, "mode": "sideways"},
        {**good, "until": float("inf")},
        {**good, "since": -1},
        {**good, "since": True},
        {**good, "model": ""},
        {**good, "reason": "x" * 501},
        {**good, "tier": 7},
        "a string",
    ]
    (tmp_path / FILE_NAME).write_text(json.dumps({"version": 1, "orders": [*bad, good, 1]}))
    with caplog.at_level(logging.ERROR, "modelguard.store"):
        orders = DirectoryStore(tmp_path).load()
    assert orders is not None and list(orders) == [("m", "t")]
    assert sum(getattr(r, "event", "") == "state_record_skipped" for r in caplog.records) == len(bad) + 1


def test_a_directory_in_place_of_the_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).mkdir()
    assert DirectoryStore(tmp_path).load() is None
    with pytest.raises(StoreError):
        DirectoryStore(tmp_path).save(KEY, OPEN)


def test_a_directory_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match=r"state directory .*file/state"):
        DirectoryStore(tmp_path / "file" / "state").prepare()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_directory_is_a_clear_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="state directory"):
            DirectoryStore(tmp_path).prepare()
    finally:
        tmp_path.chmod(0o700)


def _save_many(directory: str, model: str) -> None:
    store = DirectoryStore(directory)
    for index in range(40):
        store.save((model, f"t{index}"), ForceOrder(ForceMode.FORCED_OPEN, "", model, float(index)))


def test_writers_in_several_processes_keep_each_others_changes(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_save_many, args=(str(tmp_path), f"m{n}")) for n in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    assert len(DirectoryStore(tmp_path).load() or {}) == 120


def test_the_default_directory_is_per_user_unless_set() -> None:
    assert default_state_dir({"MODELGUARD_STATE_DIR": "/var/lib/mg"}) == Path("/var/lib/mg")
    assert default_state_dir({"XDG_STATE_HOME": "/x"}) == Path("/x/modelguard")
    assert default_state_dir({}) == Path.home() / ".local" / "state" / "modelguard"


def test_a_write_after_corruption_keeps_the_orders_last_read_and_the_records_it_could_not(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    store.save(KEY, OPEN)
    assert store.load() == {KEY: OPEN}
    (tmp_path / FILE_NAME).write_text("{not json")
    store.save(("ranker", "light"), CLOSED)
    assert DirectoryStore(tmp_path).load() == {KEY: OPEN, ("ranker", "light"): CLOSED}
    odd = {"model": "m", "tier": "t", "mode": "from-a-newer-version"}
    document = json.loads((tmp_path / FILE_NAME).read_text())
    (tmp_path / FILE_NAME).write_text(json.dumps({"version": 1, "orders": [*document["orders"], odd]}))
    store.load()
    store.save(KEY, None)
    assert odd in json.loads((tmp_path / FILE_NAME).read_text())["orders"]


def test_a_missing_file_or_directory_reads_as_nothing_to_read(tmp_path: Path) -> None:
    assert DirectoryStore(tmp_path / "never").load() is None
    store = DirectoryStore(tmp_path / "state")
    store.save(KEY, OPEN)
    (tmp_path / "state").rename(tmp_path / "moved")
    assert store.load() is None


def test_numbers_and_nesting_that_break_parsers_are_refused_not_raised(tmp_path: Path) -> None:
    good = {"model": "m", "tier": "t", "mode": "forced_open", "reason": "", "caller": "c", "since": 1.0}
    (tmp_path / FILE_NAME).write_text(json.dumps({"orders": [{**good, "until": 10**400}, good]}))
    assert list(DirectoryStore(tmp_path).load() or {}) == [("m", "t")]
    (tmp_path / FILE_NAME).write_text("[" * 100_000 + "]" * 100_000)
    assert DirectoryStore(tmp_path).load() is None


def test_a_canary_order_is_kept_beside_forced_states_and_read_back(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    forced = ForceOrder(ForceMode.FORCED_OPEN, "hot", "sre", 1.0)
    abort = CanaryOrder(Action.WEIGHT, "rec-v2", "hold", "sre", 2.0, weight=2500)
    store.save(("recommender", "primary"), forced)
    store.save(("recommender", CANARY_KEY), abort)
    assert DirectoryStore(tmp_path).load() == {("recommender", "primary"): forced, ("recommender", CANARY_KEY): abort}


@pytest.mark.parametrize(
    ("record", "why"),
    [
        ({"kind": "canary", "model": "m", "route": "", "action": "abort", "since": 1}, "model and route"),
        ({"kind": "canary", "model": "m", "route": "r", "action": "drop", "since": 1}, "action must be"),
        ({"kind": "canary", "model": "m", "route": "r", "action": "weight", "weight": 2, "since": 1}, "weight"),
        ({"kind": "canary", "model": "m", "route": "r", "action": "abort", "weight": True, "since": 1}, "weight"),
        ({"kind": "canary", "model": "m", "route": "r", "action": "abort", "since": 2.6e11}, "since"),
        ({"kind": "canary", "model": "m", "route": "r", "action": "abort"}, "since"),
    ],
)
def test_hostile_canary_records_are_refused_with_the_reason(record: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        order_from_record(record)


def test_the_latest_timestamp_the_admin_api_can_carry_is_accepted() -> None:
    key, order = order_from_record(
        {"kind": "canary", "model": "m", "route": "r", "action": "abort", "since": 253_402_300_799}
    )
    assert key == ("m", CANARY_KEY) and isinstance(order, CanaryOrder)
    assert messages.timestamp(order.since).seconds >= 253_402_300_798  # no ValueError, as past it
