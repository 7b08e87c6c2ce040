"""An open-loop load generator: requests at a fixed rate, whatever the answers take.

Open loop on purpose: a closed loop (next request when the last one answers) slows down when
the model does, which hides the pile-up that real clients cause during an incident. Each
request is recorded with what the client saw (status, latency, which tier, canary arm and host
served it) in a JSON-lines file; a summary of each second is printed to stdout for a live view.

Each request comes from one of ``--users`` users, drawn at random (seeded, so runs repeat) and
named in ``x-user-id``: the key a canary's sticky assignment hashes, as a real client population
would send it. A few thousand users make the canary's share of requests close to its weight.

Run as a process of its own (``python -m ext_proc.demo.loadgen``), so its work does not share
an event loop with anything it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import aiohttp

from ext_proc.policy import CRITICALITIES
from ext_proc.samples import percentile

INPUT_SIZE = 64
USER_HEADER = "x-user-id"
CRITICALITY_HEADER = "x-request-criticality"
CANARY_ARM = "canary"
"""The x-modelguard-arm value of a request served by the canary's route."""
DEFAULT_USERS = 5000


@dataclass(frozen=True, slots=True)
class Sample:
    """One request as the client saw it. ``status`` 0 means no HTTP answer (see ``error``)."""

    t: float  # wall-clock send time, seconds since the epoch
    latency: float
    status: int
    tier: str  # x-modelguard-tier of the answer; "" when modelguard did not tag it
    degraded: bool
    host: str  # x-demo-host of the model server that answered; "" for answers from Envoy
    variant: str
    error: str | None
    arm: str = ""  # x-modelguard-arm of the answer (canary or stable); "" when not on an arm
    criticality: str = ""  # x-request-criticality the request was sent with; "" when none

    @property
    def failed(self) -> bool:
        """What a client counts as a failed call: no answer, or a 5xx/429."""
        return self.status == 0 or self.status >= 500 or self.status == 429


def read_samples(path: Path) -> list[Sample]:
    samples = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                samples.append(Sample(**json.loads(line)))
    return samples


def request_body(index: int) -> bytes:
    """A deterministic input per request index, in the Open Inference Protocol's JSON form."""
    data = [round(math.sin(index * 0.37 + j * 0.11), 4) for j in range(INPUT_SIZE)]
    body = {
        "id": str(index),
        "inputs": [{"name": "input", "shape": [1, INPUT_SIZE], "datatype": "FP32", "data": data}],
    }
    return json.dumps(body).encode()


class LoadGenerator:
    def __init__(
        self,
        url: str,
        rate: float,
        duration: float,
        out: IO[str],
        timeout: float = 10.0,
        max_inflight: int = 2000,
        progress: IO[str] | None = None,
        users: int = DEFAULT_USERS,
        seed: int = 1,
        ramp: Sequence[float] = (),
        mix: Mapping[str, float] | None = None,
    ) -> None:
        """``ramp``: rates of equal stages over ``duration`` (``rate`` alone when empty); ``mix``:
        the share of requests of each criticality (``x-request-criticality``), none when empty."""
        if rate <= 0 or duration <= 0 or any(stage <= 0 for stage in ramp):
            raise ValueError("rates and duration must be positive")
        if users < 0:
            raise ValueError("users must be 0 (no user header) or more")
        self.url = url
        self.rate = rate
        self.duration = duration
        self.out = out
        self.timeout = timeout
        self.max_inflight = max_inflight
        self.progress = progress
        self.users = users
        self._rng = random.Random(seed)
        self.schedule = send_times(list(ramp) or [rate], duration)
        """Seconds after the start at which each request is due."""
        self.classes = list(mix or {})
        self.weights = [float(share) for share in (mix or {}).values()]
        self.sent = 0
        self.skipped = 0
        self._inflight: set[asyncio.Task[None]] = set()
        self._second: list[Sample] = []
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        headers = {"content-type": "application/json"}
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
            reporter = asyncio.create_task(self._report_every_second())
            loop = asyncio.get_running_loop()
            start = loop.time()
            for index, offset in enumerate(self.schedule):
                due = start + offset
                delay = due - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    break
                if len(self._inflight) >= self.max_inflight:
                    self.skipped += 1
                    continue
                task = asyncio.create_task(self._one(session, index, self._headers()))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                self.sent += 1
            if self._inflight:
                await asyncio.wait(set(self._inflight), timeout=self.timeout + 1)
            for task in list(self._inflight):
                task.cancel()
            reporter.cancel()
            self._flush_second()

    def _headers(self) -> dict[str, str] | None:
        """The headers naming the user and the criticality of the next request (None: neither)."""
        found: dict[str, str] = {}
        if self.users:
            found[USER_HEADER] = f"user-{self._rng.randrange(self.users)}"
        if self.classes:
            found[CRITICALITY_HEADER] = self._rng.choices(self.classes, self.weights)[0]
        return found or None

    async def _one(self, session: aiohttp.ClientSession, index: int, headers: dict[str, str] | None) -> None:
        sent_at = time.time()
        started = time.perf_counter()
        status, error = 0, None
        tier = host = variant = arm = ""
        degraded = False
        try:
            async with session.post(self.url, data=request_body(index), headers=headers) as response:
                await response.read()
                status = response.status
                tier = response.headers.get("x-modelguard-tier", "")
                arm = response.headers.get("x-modelguard-arm", "")
                degraded = response.headers.get("x-modelguard-degraded", "") == "true"
                host = response.headers.get("x-demo-host", "")
                variant = response.headers.get("x-demo-variant", "")
        except TimeoutError:
            error = "timeout"
        except aiohttp.ClientError as exc:
            error = type(exc).__name__
        criticality = "" if headers is None else headers.get(CRITICALITY_HEADER, "")
        latency = time.perf_counter() - started
        sample = Sample(sent_at, latency, status, tier, degraded, host, variant, error, arm, criticality)
        self.out.write(json.dumps(asdict(sample)) + "\n")
        self._second.append(sample)

    async def _report_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._flush_second()

    def _flush_second(self) -> None:
        done, self._second = self._second, []
        if self.progress is None:
            return
        latencies = sorted(s.latency for s in done)
        tiers = Counter(s.tier or (s.variant and f"unprotected:{s.variant}") or "none" for s in done)
        line = {
            "event": "second",
            "t": round(time.time(), 3),
            "answered": len(done),
            "failed": sum(s.failed for s in done),
            "inflight": len(self._inflight),
            "tiers": dict(tiers),
            "arms": dict(Counter(s.arm for s in done if s.arm)),
            "canary_failed": sum(s.failed for s in done if s.arm == CANARY_ARM),
            "p50_ms": latency_ms(latencies, 0.5),
            "p99_ms": latency_ms(latencies, 0.99),
        }
        self.progress.write(json.dumps(line) + "\n")
        self.progress.flush()


def send_times(rates: Sequence[float], duration: float) -> list[float]:
    """When each request is due, in seconds after the start: ``rates`` are equal stages of ``duration``."""
    stage = duration / len(rates)
    times: list[float] = []
    for number, rate in enumerate(rates):
        begin = number * stage
        times.extend(begin + index / rate for index in range(int(rate * stage)))
    return times


def parse_mix(text: str) -> dict[str, float]:
    """``critical=0.2,standard=0.5,sheddable=0.3`` to shares; ValueError naming what is wrong."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        if name.strip() not in CRITICALITIES or not share:
            raise ValueError(f"{part!r}: expected NAME=SHARE with NAME one of {', '.join(CRITICALITIES)}")
        mix[name.strip()] = float(share)
    if not all(math.isfinite(share) and share >= 0 for share in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError("shares must be finite, 0 or more, and not all 0")
    return mix


def latency_ms(ordered: Sequence[float], fraction: float) -> float:
    """A percentile of ascending latencies in seconds, in ms to 0.1 ms; 0 for none.

    The demo's rank rule (`strict`): the p99 of 100 requests is the slowest one.
    """
    return round(percentile(ordered, fraction, strict=True) * 1000, 1) if ordered else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ext_proc.demo.loadgen", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout per request, seconds")
    parser.add_argument("--out", required=True, type=Path, help="JSON-lines file of samples")
    parser.add_argument(
        "--users", type=int, default=DEFAULT_USERS, help=f"user population for {USER_HEADER}; 0: no header (5000)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the user draws (1)")
    parser.add_argument(
        "--ramp", help="rates of equal stages of the run instead of --rate, comma-separated (e.g. 30,60,90,120)"
    )
    parser.add_argument(
        "--mix", help=f"criticality shares for {CRITICALITY_HEADER}, e.g. critical=0.2,standard=0.5,sheddable=0.3"
    )
    args = parser.parse_args(argv)
    if args.users < 0:
        parser.error("--users must be 0 or more")
    try:
        ramp = [float(rate) for rate in args.ramp.split(",")] if args.ramp else []
        mix = parse_mix(args.mix) if args.mix else None
    except ValueError as exc:
        parser.error(str(exc))

    async def run() -> None:
        with args.out.open("w", encoding="utf-8") as out:
            generator = LoadGenerator(
                args.url,
                args.rate,
                args.duration,
                out,
                args.timeout,
                progress=sys.stdout,
                users=args.users,
                seed=args.seed,
                ramp=ramp,
                mix=mix,
            )
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, generator.stop)
            await generator.run()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
