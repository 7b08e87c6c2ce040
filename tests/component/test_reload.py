"""Reloading the policy of a running server: what goes live, what is refused, what is kept, and
what /metrics and /v1/state say about it."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ext_proc.policy import PolicyError, load_policy, parse_policy
from ext_proc.policy.loading import PolicyFile
from ext_proc.policy.report import error_lines
from ext_proc.server.reload import Reloader
from tests.component.conftest import POLICY, Harness

RANKER_PATH = "/v2/models/ranker/infer"


def reloader_for(harness: Harness, path: Path, text: str = POLICY) -> Reloader:
    path.write_text(text)
    service = harness.service
    live = PolicyFile(parse_policy(text), hashlib.sha256(text.encode()).hexdigest())
    return Reloader(str(path), service.servicer, service.registry, service.stats, live)


async def scrape(harness: Harness, page: str = "/metrics") -> str:
    async with aiohttp.ClientSession() as session, session.get(harness.admin_url + page) as response:
        assert response.status == 200
        return await response.text()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_a_valid_file_goes_live_and_the_metrics_say_which(harness: Harness, tmp_path: Path) -> None:
    reloader = reloader_for(harness, tmp_path / "policy.yaml")
    before = samples(await scrape(harness), "modelguard_policy_info")
    assert before == {(("sha256", reloader.live.sha256),): 1.0}
    text = POLICY.replace("{name: light, route: recommender-mobilenet}", "{name: light, route: rec-light-v2}")
    (tmp_path / "policy.yaml").write_text(text)
    assert await reloader.reload("test") == "success"
    body = await scrape(harness)
    assert samples(body, "modelguard_policy_info") == {(("sha256", hashlib.sha256(text.encode()).hexdigest()),): 1.0}
    assert samples(body, "modelguard_policy_reloads_total")[(("result", "success"),)] == 1.0
    assert harness.service.guard.models[0].tiers[1].route == "rec-light-v2"


async def test_an_unchanged_file_changes_nothing(harness: Harness, tmp_path: Path) -> None:
    reloader = reloader_for(harness, tmp_path / "policy.yaml")
    guard = harness.service.guard
    assert await reloader.reload("test") == "unchanged"
    assert harness.service.guard is guard
    assert samples(await scrape(harness), "modelguard_policy_reloads_total")[(("result", "unchanged"),)] == 1.0


async def test_an_invalid_file_is_refused_logged_as_check_prints_it_and_the_old_policy_serves(
    harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    reloader = reloader_for(harness, path)
    guard = harness.service.guard
    path.write_text(POLICY.replace("failure_rate: 0.5", "failure_rate: 5").replace("route: ranker-v1", "rout: x"))
    with pytest.raises(PolicyError) as refused:
        load_policy(path)
    with caplog.at_level(logging.ERROR, logger="modelguard.reload"):
        assert await reloader.reload("test") == "error"
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "policy_reload_failed"]
    assert record.errors == error_lines(refused.value)  # type: ignore[attr-defined]
    assert len(record.errors) == 4  # type: ignore[attr-defined]  # the count line and three errors
    assert harness.service.guard is guard
    assert await harness.request(200) == ("primary", "ok")
    body = await scrape(harness)
    assert samples(body, "modelguard_policy_reloads_total")[(("result", "error"),)] == 1.0
    assert samples(body, "modelguard_policy_info") == {(("sha256", reloader.live.sha256),): 1.0}


async def test_a_missing_file_is_refused_too(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    reloader = reloader_for(harness, path)
    path.unlink()
    assert await reloader.reload("test") == "error"
    assert await harness.request(200) == ("primary", "ok")


async def test_an_open_breaker_stays_open_and_a_removed_model_leaves_metrics_and_state(
    harness: Harness, tmp_path: Path
) -> None:
    path = tmp_path / "policy.yaml"
    reloader = reloader_for(harness, path)
    for _ in range(4):
        await harness.request(503)
    assert await harness.request(200) == ("light", "breaker_open")
    await harness.exchange({":path": RANKER_PATH, ":authority": "ranker.models"}, 200)
    without_ranker = POLICY[: POLICY.index("  - name: ranker")]
    path.write_text(without_ranker)
    assert await reloader.reload("test") == "success"
    assert await harness.request(200) == ("light", "breaker_open")
    body = await scrape(harness)
    state = samples(body, "modelguard_breaker_state")
    assert state[(("model", "recommender"), ("state", "open"), ("tier", "primary"))] == 1.0
    assert not any(dict(labels).get("model") == "ranker" for labels in samples(body, "modelguard_requests_total"))
    assert "ranker" not in await scrape(harness, "/v1/state")
    requests = samples(body, "modelguard_requests_total")
    assert requests[(("model", "recommender"), ("reason", "ok"), ("tier", "primary"))] == 4.0  # kept across


async def test_a_fifo_in_place_of_the_file_is_refused_not_read(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    reloader = reloader_for(harness, path)
    path.unlink()
    os.mkfifo(path)  # nobody writes: a read would block for good, and every reload after it
    assert await asyncio.wait_for(reloader.reload("test"), 5) == "error"
    path.unlink()
    path.write_text(POLICY.replace("min_calls: 4", "min_calls: 6"))
    assert await asyncio.wait_for(reloader.reload("test"), 5) == "success"


async def test_a_storm_of_triggers_costs_two_reads_not_one_per_trigger(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "policy.yaml"
    reloader = reloader_for(harness, path)
    reads: list[str] = []
    from ext_proc.policy.loading import load_policy_file
    from ext_proc.server import reload as reload_module

    def counting(where: str, regular_only: bool = False) -> PolicyFile:
        reads.append(where)
        return load_policy_file(where, regular_only)

    monkeypatch.setattr(reload_module, "load_policy_file", counting)
    path.write_text(POLICY.replace("min_calls: 4", "min_calls: 6"))
    results = await asyncio.gather(*(reloader.reload("SIGHUP") for _ in range(50)))
    assert results.count("success") == 1 and results.count("unchanged") == 1 and results.count("folded") == 48
    assert len(reads) == 2
