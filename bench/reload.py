"""Policy reloads under traffic: does swapping the policy of a serving modelguard lose a request?

One modelguard (``serve``, N models x 3 tiers, bench/policies.py) behind the reference Envoy
config, in front of a direct_response upstream (bench/overhead.py's stack, as bench/scrape.py
runs it). An open-loop client (ext_proc/demo/loadgen.py, a process of its own) sends a fixed rate
for D seconds while a swapper thread in this process replaces the policy S times, spread evenly
over the run, cycling through the three ways a policy file changes in production:

- ``configmap``: a Kubernetes ConfigMap volume update. modelguard runs with ``--policy
  DIR/policy.yaml``, where ``policy.yaml -> ..data/policy.yaml`` and ``..data -> ..<timestamp>``;
  a swap writes a new ``..<timestamp>`` directory, points a ``..data_tmp`` symlink at it,
  ``os.replace``s that over ``..data`` and deletes the old directory (what the kubelet does);
- ``rename``: ``policy.yaml.tmp`` written next to the file (inside the current ``..data``
  directory) and ``os.replace``d over it;
- ``sighup``: the file rewritten in place, then SIGHUP to modelguard.

Every swap writes a policy that really differs (the default breaker's ``min_calls`` alternates
between two values, and a comment names the swap), and is timed from the write until
``modelguard_policy_info{sha256=...}`` on /metrics names the new file's SHA-256 (10 s at most;
longer is a failure). One extra swap in the middle (a ConfigMap update: one trigger, so exactly
one refusal) writes an invalid policy (``failure_rate: 5``): it must raise
``modelguard_policy_reloads_total{result="error"}`` by one and leave the live SHA-256 alone; the
next swap restores a valid policy.

Reported (a table on stdout, ``reload.md`` and ``reload.json`` in ``--out``): requests, requests
lost (not 200, or without ``x-modelguard-tier``, or never answered), Envoy's ext_proc fail-open
counters, the client's p50/p99/max latency, swaps by kind with their median and worst time to
live, and modelguard's reload counters. Exit 0 only when nothing was lost, nothing failed open,
every valid swap went live and the invalid one was refused.

Usage:
  python -m bench.reload [--rate 200] [--duration 60] [--swaps 20] [--models 20] [--out DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.overhead import (
    LIGHT_ROUTE,
    PRIMARY_ROUTE,
    BenchError,
    Stack,
    Unavailable,
    check_stack,
    sigterm_as_interrupt,
    start_front_envoy,
    start_upstream,
)
from bench.policies import policy_document
from bench.scrape import ENVOY_STATS, PATH, run_load
from ext_proc.policy import PolicyError, parse_policy
from ext_proc.processes import EnvoyProcess, ModelguardProcess, StackError, free_ports, http_request, say, wait_for
from ext_proc.samples import percentile

KINDS = ("configmap", "rename", "sighup")
INVALID_KIND = "configmap"  # one trigger only: a SIGHUP'd in-place edit is also seen by the watch (2 refusals)
KIND_LABELS = {
    "configmap": "ConfigMap symlink swap",
    "rename": "rename over the file",
    "sighup": "in-place rewrite + SIGHUP",
}
LIVE_WITHIN_S = 10.0  # a swap not live by then fails the run
REFUSAL_SETTLE_S = 1.2  # after the refusal: no second one, the live policy unchanged (over two watch polls)
POLL_S = 0.05
MIN_CALLS = (20, 30)  # the default breaker's min_calls, alternating from one swap to the next
LOAD_START_S = 30.0  # bounded wait for the load generator's first answer

SUMMARY_KEYS = ("requests", "lost", "failure_mode_allowed", "message_timeouts", "streams_failed",
                "p50_ms", "p99_ms", "max_ms")  # fmt: skip

_INFO = re.compile(r'^modelguard_policy_info\{sha256="([0-9a-f]*)"\} ', re.MULTILINE)
_RELOADS = re.compile(r'^modelguard_policy_reloads_total\{result="(\w+)"\} (\S+)$', re.MULTILINE)


# --------------------------------------------------------------------------- policies


def policy_text(models: int, version: int, *, invalid: bool = False) -> str:
    """Version 0 is the start; swap N writes version N. bench/policies.py's shape (every
    model routed by the reference Envoy config), a ``defaults.breaker`` that differs from one
    version to the next, and a comment naming the version (so no two files hash alike)."""
    breaker: dict[str, Any] = {"min_calls": MIN_CALLS[version % len(MIN_CALLS)]}
    if invalid:
        breaker["failure_rate"] = 5  # a ratio must lie in 0..1: refused
    document = {"defaults": {"breaker": breaker}}
    document.update(policy_document(models, primary_route=PRIMARY_ROUTE, light_route=LIGHT_ROUTE))
    comment = f"# bench/reload.py: version {version}{' (invalid)' if invalid else ''}\n"
    return comment + yaml.safe_dump(document, sort_keys=False)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class PolicyDir:
    """A ConfigMap-style volume holding ``policy.yaml``, and the three ways of changing it."""

    def __init__(self, root: Path, text: str) -> None:
        self.root = root
        if root.exists():  # a rerun into the same --out
            shutil.rmtree(root)
        root.mkdir(parents=True)
        data = self._timestamped(text)
        os.symlink(data.name, root / "..data")
        os.symlink("..data/policy.yaml", root / "policy.yaml")

    @property
    def path(self) -> Path:
        """What modelguard is started with: ``policy.yaml -> ..data/policy.yaml``."""
        return self.root / "policy.yaml"

    def _timestamped(self, text: str) -> Path:
        prefix = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=self.root))
        folder.chmod(0o755)
        (folder / "policy.yaml").write_text(text)
        return folder

    def configmap(self, text: str) -> None:
        """What the kubelet's atomic writer does: a new timestamped directory, ``..data`` swapped
        to it in one rename, the old directory deleted."""
        old = self.root / os.readlink(self.root / "..data")
        new = self._timestamped(text)
        tmp = self.root / "..data_tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(new.name, tmp)
        os.replace(tmp, self.root / "..data")
        shutil.rmtree(old)

    def rename(self, text: str) -> None:
        """A new file renamed over the one in the current ``..data`` directory."""
        target = self.root / "..data" / "policy.yaml"
        tmp = target.with_name("policy.yaml.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)

    def rewrite(self, text: str) -> None:
        """The file's bytes replaced in place (same inode), through the symlinks."""
        with self.path.open("w") as handle:
            handle.write(text)


# --------------------------------------------------------------------------- /metrics


@dataclass(frozen=True)
class Live:
    sha256: str
    reloads: dict[str, int]


def read_live(modelguard: ModelguardProcess) -> Live | None:
    """The live policy's SHA-256 and the reload counters from /metrics; None if it did not answer."""
    try:
        answer = http_request(modelguard.admin_url + "/metrics", timeout=5.0)
    except (OSError, http.client.HTTPException):
        return None
    if answer.status != 200:
        return None
    text = answer.body.decode(errors="replace")
    found = _INFO.search(text)
    reloads = {result: int(float(value)) for result, value in _RELOADS.findall(text)}
    return Live(found.group(1) if found else "", reloads)


# --------------------------------------------------------------------------- the swapper


@dataclass
class Swapper:
    """Performs the planned swaps over ``duration`` seconds from the load's first answer, each
    followed by a bounded wait for its outcome on /metrics."""

    policies: PolicyDir
    modelguard: ModelguardProcess
    models: int
    swaps: int
    duration: float
    load_file: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    load_started: float | None = None
    _load_over: threading.Event = field(default_factory=threading.Event)
    _abort: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def invalid_at(self) -> int:
        """The index of the invalid swap among all swaps + 1: the middle one."""
        return (self.swaps + 1) // 2

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="swapper", daemon=True)
        self._thread.start()

    def finish(self, abort: bool) -> None:
        """No new swap after this; one under way ends within its bounded wait (or soon on abort)."""
        self._load_over.set()
        if abort:
            self._abort.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=LIVE_WITHIN_S + REFUSAL_SETTLE_S + 10)
            if thread.is_alive():
                self.problems.append("the swapper did not finish")

    def _run(self) -> None:
        try:
            self._swaps()
        except Exception as exc:  # a broken swap must end the run as failed, not hang it
            self.problems.append(f"swapper: {type(exc).__name__}: {exc}")

    def _swaps(self) -> None:
        if not wait_for(lambda: self._load_over.is_set() or _size(self.load_file) > 0, LOAD_START_S, interval=0.02):
            self.problems.append(f"the load sent nothing within {LOAD_START_S:g} s")
            return
        self.load_started = time.monotonic()
        events = self.swaps + 1
        interval = self.duration / (events + 1)
        valid = 0
        for index in range(events):
            if self._abort.wait(max(0.0, self.load_started + (index + 1) * interval - time.monotonic())):
                return
            if self._load_over.is_set():
                self.problems.append(f"the load ended before swap {index + 1} of {events}")
                return
            if index == self.invalid_at:
                self.records.append(self._invalid(index))
            else:
                self.records.append(self._valid(index, KINDS[valid % len(KINDS)]))
                valid += 1

    def _write(self, kind: str, text: str) -> None:
        if kind == "configmap":
            self.policies.configmap(text)
        elif kind == "rename":
            self.policies.rename(text)
        else:
            self.policies.rewrite(text)
            os.kill(self.modelguard.pid, signal.SIGHUP)

    def _offset(self) -> float:
        return round(time.monotonic() - (self.load_started or 0.0), 3)

    def _valid(self, index: int, kind: str) -> dict[str, Any]:
        text = policy_text(self.models, index + 1)
        expected = sha256(text)
        record: dict[str, Any] = {"swap": index + 1, "kind": kind, "valid": True,
                                  "at_s": self._offset(), "sha256": expected}  # fmt: skip
        started = time.monotonic()
        self._write(kind, text)

        def live() -> bool:
            if self._abort.is_set():
                return True
            seen = read_live(self.modelguard)
            return seen is not None and seen.sha256 == expected

        went_live = wait_for(live, LIVE_WITHIN_S, interval=POLL_S) and not self._abort.is_set()
        record["live"] = bool(went_live)
        record["live_s"] = round(time.monotonic() - started, 3) if went_live else None
        if not went_live:
            self.problems.append(f"swap {index + 1} ({kind}) not live within {LIVE_WITHIN_S:g} s")
        return record

    def _invalid(self, index: int) -> dict[str, Any]:
        text = policy_text(self.models, index + 1, invalid=True)
        record: dict[str, Any] = {"swap": index + 1, "kind": INVALID_KIND, "valid": False,
                                  "at_s": self._offset(), "sha256": sha256(text), "refused": False}  # fmt: skip
        before = read_live(self.modelguard)
        if before is None:
            self.problems.append(f"swap {index + 1} (invalid): /metrics did not answer before it")
            return record
        errors_before = before.reloads.get("error", 0)
        started = time.monotonic()
        self._write(INVALID_KIND, text)

        def refused() -> bool:
            if self._abort.is_set():
                return True
            seen = read_live(self.modelguard)
            return seen is not None and seen.reloads.get("error", 0) > errors_before

        noticed = bool(wait_for(refused, LIVE_WITHIN_S, interval=POLL_S)) and not self._abort.is_set()
        record["refused_s"] = round(time.monotonic() - started, 3) if noticed else None
        if not self._abort.is_set():
            self._abort.wait(REFUSAL_SETTLE_S)  # a second refusal, or the file going live, would show by now
        after = read_live(self.modelguard)
        errors_after = after.reloads.get("error", 0) if after is not None else None
        record.update(errors_before=errors_before, errors_after=errors_after, live_before=before.sha256,
                      live_after=after.sha256 if after is not None else None)  # fmt: skip
        record["refused"] = (
            noticed and after is not None and errors_after == errors_before + 1
            and after.sha256 == before.sha256
        )  # fmt: skip
        if not record["refused"]:
            self.problems.append(
                f"swap {index + 1} (invalid): errors {errors_before} -> {errors_after}, live sha256 "
                f"{before.sha256[:12]} -> {(after.sha256 if after else '?')[:12]} (expected +1 and unchanged)"
            )
        return record


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --------------------------------------------------------------------------- the run


def log_events(path: Path) -> dict[str, Any]:
    """modelguard's reload events from its JSON log: counts by event and trigger, the slowest reload."""
    counts: Counter[str] = Counter()
    took: list[float] = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        event = entry.get("event", "")
        if event in ("policy_reloaded", "policy_unchanged", "policy_reload_failed"):
            counts[f"{event} ({entry.get('trigger', '?')})"] += 1
            if event == "policy_reloaded" and isinstance(entry.get("took_ms"), int | float):
                took.append(float(entry["took_ms"]))
    return {"events": dict(sorted(counts.items())), "max_took_ms": max(took) if took else None,
            "median_took_ms": round(statistics.median(took), 1) if took else None}  # fmt: skip


def by_kind(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        mine = [r for r in records if r["valid"] and r["kind"] == kind]
        times = sorted(r["live_s"] for r in mine if r["live"])
        summary[kind] = {
            "swaps": len(mine),
            "live": len(times),
            "median_s": round(statistics.median(times), 3) if times else None,
            "max_s": times[-1] if times else None,
        }
    return summary


def measure(options: argparse.Namespace, upstream_port: int) -> dict[str, Any]:
    out: Path = options.out
    start_text = policy_text(options.models, 0)
    policies = PolicyDir(out / "policy", start_text)
    grpc_port, admin_port = free_ports(2)
    modelguard = ModelguardProcess(policies.path, grpc_port=grpc_port, admin_port=admin_port,
                                   log_path=out / "modelguard.log")  # fmt: skip
    envoy: EnvoyProcess | None = None
    swapper: Swapper | None = None
    try:
        modelguard.wait_ready(60.0)
        envoy = start_front_envoy("reload", out, upstream_port, [grpc_port])
        envoy.wait_ready(20.0)
        check_stack(Stack("d", envoy, modelguard), PATH)
        first = read_live(modelguard)
        if first is None or first.sha256 != sha256(start_text):
            raise BenchError(f"/metrics does not name the starting policy: {first}")
        before = envoy.stats(ENVOY_STATS)
        load_file = out / "load.jsonl"
        load_file.unlink(missing_ok=True)
        swapper = Swapper(policies, modelguard, options.models, options.swaps, options.duration, load_file)
        swapper.start()
        say(f"load: {options.rate:g} req/s for {options.duration:g} s; {options.swaps} swaps + 1 invalid")
        try:
            samples = run_load(envoy.url + PATH, options.rate, options.duration, load_file)
        except BaseException:
            swapper.finish(abort=True)
            raise
        swapper.finish(abort=False)
        after = envoy.stats(ENVOY_STATS)
        last = read_live(modelguard)
    finally:
        if swapper is not None:
            swapper.finish(abort=True)
        if envoy is not None:
            envoy.stop()
        modelguard.stop(grace=5.0)

    def stat(suffix: str) -> int:
        return sum(v - before.get(k, 0) for k, v in after.items() if k.endswith(suffix))

    latencies = sorted(s.latency for s in samples)
    expected = int(options.rate * options.duration)
    bad = sum(1 for s in samples if s.status != 200 or not s.tier)
    unsent = max(0, expected - len(samples))
    problems = list(swapper.problems)
    valid = [r for r in swapper.records if r["valid"]]
    invalid = [r for r in swapper.records if not r["valid"]]
    if len(valid) != options.swaps or len(invalid) != 1:
        problems.append(f"swaps done: {len(valid)} of {options.swaps} valid, {len(invalid)} of 1 invalid")
    last_valid = valid[-1]["sha256"] if valid else sha256(start_text)
    if last is None or last.sha256 != last_valid:
        problems.append(f"at the end /metrics names {last.sha256 if last else '?'}, not the last valid swap's file")
    reloads = {k: v - first.reloads.get(k, 0) for k, v in last.reloads.items()} if last is not None else {}
    results: dict[str, Any] = {
        "options": {key: getattr(options, key) for key in ("rate", "duration", "swaps", "models", "smoke")},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load": {
            "expected": expected,
            "requests": len(samples),
            "not_200_or_untagged": bad,
            "unanswered": unsent,
            "lost": bad + unsent,
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 2) if latencies else None,
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2) if latencies else None,
            "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
        },
        "envoy": {
            "failure_mode_allowed": stat(".failure_mode_allowed"),
            "message_timeouts": stat(".message_timeouts"),
            "streams_failed": stat(".streams_failed"),
        },
        "swaps": swapper.records,
        "by_kind": by_kind(swapper.records),
        "invalid": invalid[0] if invalid else None,
        "all_valid_live": len(valid) == options.swaps and all(r["live"] for r in valid),
        "invalid_refused": bool(invalid and invalid[0]["refused"]),
        "reloads": reloads,
        "log": log_events(modelguard.log_path),
        "problems": problems,
    }
    results["passed"] = (
        results["load"]["lost"] == 0
        and results["envoy"]["failure_mode_allowed"] == 0
        and results["all_valid_live"]
        and results["invalid_refused"]
        and not problems
    )
    return results


# --------------------------------------------------------------------------- the report


def markdown(results: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)

    options, load, envoy = results["options"], results["load"], results["envoy"]
    lines = [
        f"Policy reloads during {options['rate']:g} req/s for {options['duration']:g} s through Envoy "
        f"(message_timeout 0.2 s), {options['models']} models, {results['machine']['cpus']} CPUs",
        "",
        "| requests | lost (not 200, untagged or unanswered) | failure_mode_allowed | message_timeouts "
        "| streams_failed | p50 (ms) | p99 (ms) | max (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| " + " | ".join(cell(load[k] if k in load else envoy[k]) for k in SUMMARY_KEYS) + " |",
        "",
        "| swap | swaps | live | swap to live, median (s) | worst (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, row in results["by_kind"].items():
        lines.append(f"| {KIND_LABELS[kind]} | {row['swaps']} | {row['live']} | {cell(row['median_s'])} "
                     f"| {cell(row['max_s'])} |")  # fmt: skip
    invalid = results["invalid"]
    if invalid is not None:
        verdict = "refused, live policy unchanged" if invalid["refused"] else "NOT refused as expected"
        lines.append(f"| invalid policy ({KIND_LABELS[invalid['kind']]}) | 1 | {verdict} "
                     f"| refused after {cell(invalid.get('refused_s'))} | |")  # fmt: skip
    reloads = results["reloads"]
    lines += [
        "",
        "| reloads (/metrics) | success | error | unchanged |",
        "|---|---:|---:|---:|",
        f"| during the run | {cell(reloads.get('success'))} | {cell(reloads.get('error'))} "
        f"| {cell(reloads.get('unchanged'))} |",
    ]
    log = results["log"]
    events = ", ".join(f"{name} {count}" for name, count in log["events"].items())
    lines += ["", f"Log: {events or 'no reload events'}; reload took (median / max): "
                  f"{cell(log['median_took_ms'])} / {cell(log['max_took_ms'])} ms"]  # fmt: skip
    if results["problems"]:
        lines += ["", "Problems:", *(f"- {p}" for p in results["problems"])]
    lines += ["", "PASS" if results["passed"] else "FAIL"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (200)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    parser.add_argument("--swaps", type=int, default=20, help="valid swaps; one invalid one is added (20)")
    parser.add_argument("--models", type=int, default=20, help="models in the policy (20)")
    parser.add_argument("--out", type=Path, default=Path("out") / f"reload-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--smoke", action="store_true", help="rate 50, duration 8, 3 swaps + the invalid one")
    options = parser.parse_args(argv)
    if options.smoke:
        options.rate, options.duration, options.swaps = 50.0, 8.0, 3
    if options.swaps < 1 or options.models < 1 or options.rate <= 0 or options.duration <= 0:
        parser.error("--swaps and --models must be >= 1, --rate and --duration > 0")
    return options


def check_policies(models: int) -> None:
    """Fail here, not in the server: every version parses, the invalid one is refused."""
    for version in (0, 1):
        parse_policy(policy_text(models, version))
    with contextlib.suppress(PolicyError):
        parse_policy(policy_text(models, 2, invalid=True))
        raise BenchError("the invalid policy was accepted by parse_policy")


def run(options: argparse.Namespace) -> dict[str, Any]:
    options.out.mkdir(parents=True, exist_ok=True)
    check_policies(options.models)
    upstream = start_upstream(options.out)
    try:
        upstream.wait_ready(20.0)
        return measure(options, upstream.listener_port)
    finally:
        upstream.stop()


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        with sigterm_as_interrupt():
            results = run(options)
    except KeyboardInterrupt:
        say("interrupted: every process the benchmark started has been stopped")
        return 130
    except (BenchError, Unavailable, StackError, subprocess.SubprocessError) as exc:
        say(f"bench.reload: {exc}")
        return 1
    table = markdown(results)
    (options.out / "reload.md").write_text(table + "\n")
    (options.out / "reload.json").write_text(json.dumps(results, indent=2) + "\n")
    say("")
    say(table)
    say(f"written: {options.out / 'reload.md'}, {options.out / 'reload.json'}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
