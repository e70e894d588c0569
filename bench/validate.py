"""``python -m bench validate``: µs per event spent in app.ingest.validation.parse_frame, no server.

Frames are what clients send: a web page's batch of 100 (one session, small `data`),
a relay's batch of 100 (a `session_id` in every event) and 10,000-event batches.
Each row is the median of --runs timings of --seconds each. The machine may be
shared: compare within one run. `--baseline <checkout>` times that checkout's
app/ingest/validation.py too, interleaved with this one's, and prints the ratio per row.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from app.ingest import validation as ingest

SESSIONS = [f"{i:08x}-48cd-4fba-946b-53d15b7b43e0" for i in range(8)]
BASE_TS = 1_700_000_000_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=3, help="timings per row; the median is reported (default 3)")
    p.add_argument("--seconds", type=float, default=1.0, help="length of one timing (default 1)")
    p.add_argument("--baseline", type=Path, default=None, help="another checkout whose validator is timed alongside")


def events(count: int, relay: bool, timestamps: str = "ms") -> list[dict[str, Any]]:
    """A session's start, EVENTs with small data, its end; relay events name their session."""
    out: list[dict[str, Any]] = []
    for i in range(count):
        ts: Any = BASE_TS + i * 37
        if timestamps == "s":
            ts = ts / 1000
        elif timestamps == "rfc3339":
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000)) + f".{ts % 1000:03d}Z"
        if i == 0:
            event: dict[str, Any] = {"type": "SESSION_START", "timestamp": ts}
        elif i == count - 1:
            event = {"type": "SESSION_END", "timestamp": ts}
        else:
            event = {"type": "EVENT", "timestamp": ts, "name": f"page_view_{i % 12}"}
            if i % 4:
                event["data"] = {"path": f"/products/{i}", "ref": "campaign-7", "n": i % 10, "ok": True}
        if relay:
            event["session_id"] = SESSIONS[i % len(SESSIONS)]
        out.append(event)
    return out


def load(checkout: Path) -> ModuleType:
    """The validator of another checkout, as its own module (it imports nothing else of app).

    app/ingest/validation.py since the flow folders, app/ingest.py before them.
    """
    path = next((p for p in (checkout / "app/ingest/validation.py", checkout / "app/ingest.py") if p.is_file()), None)
    spec = importlib.util.spec_from_file_location("baseline_ingest", path) if path else None
    if spec is None or spec.loader is None:
        raise SystemExit(f"no app/ingest/validation.py under {checkout}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def rules(module: ModuleType, relay: bool) -> Any:
    """FrameRules of that module (its timestamp field changed from a scale to a unit mode)."""
    names = {f.name for f in dataclasses.fields(module.FrameRules)}
    unit: dict[str, Any] = {"timestamp_scale": 1} if "timestamp_scale" in names else {"timestamp_unit": "auto"}
    return module.FrameRules(
        session_id=None if relay else SESSIONS[0],
        max_batch_events=10_000,
        max_data_bytes=16 * 1024,
        max_data_depth=64,
        **unit,
    )


def time_frame(module: ModuleType, frame: str, count: int, relay: bool, seconds: float) -> float:
    """CPU µs per event over about `seconds` of repeated parse_frame calls.

    CPU time of this process, not wall time: on a shared machine the time spent
    waiting for a core is not the validator's.
    """
    rules_ = rules(module, relay)
    parse_frame = module.parse_frame
    result = parse_frame(frame, 1, rules_)
    if not isinstance(result, module.Batch) or len(result.entries) != count:
        raise SystemExit(f"the benchmark frame was refused: {result}")
    calls = 0
    started = time.process_time()
    deadline = started + seconds
    while True:
        parse_frame(frame, 1, rules_)
        calls += 1
        now = time.process_time()
        if now >= deadline:
            return (now - started) / calls / count * 1e6


def run(args: argparse.Namespace) -> int:
    modules = {"this": ingest}
    if args.baseline is not None:
        modules = {"baseline": load(args.baseline), "this": ingest}
    cases = [
        ("100 events, one session", 100, False, "ms"),
        ("100 events, relay (session_id in each)", 100, True, "ms"),
        ("10,000 events, one session", 10_000, False, "ms"),
        ("10,000 events, relay", 10_000, True, "ms"),
        ("100 events, fractional seconds", 100, False, "s"),
        ("100 events, RFC 3339 strings", 100, False, "rfc3339"),
    ]
    print(f"parse_frame, CPU µs per event, median of {args.runs} × {args.seconds:g} s, runs interleaved (pid {os.getpid()})\n")
    header = " | ".join(f"{name} µs/event | {name} runs" for name in modules)
    print(f"| frame | bytes/event | {header} |" + (" this ÷ baseline |" if len(modules) > 1 else ""))
    print("|---|---:|" + "---:|---|" * len(modules) + ("---:|" if len(modules) > 1 else ""))
    for label, count, relay, unit in cases:
        frame = orjson.dumps(events(count, relay, unit)).decode()
        times: dict[str, list[float]] = {name: [] for name in modules}
        for _ in range(args.runs):
            for name, module in modules.items():
                if unit != "ms" and "timestamp_scale" in {f.name for f in dataclasses.fields(module.FrameRules)}:
                    times[name].append(float("nan"))  # that checkout reads integer milliseconds only
                else:
                    times[name].append(time_frame(module, frame, count, relay, args.seconds))
        medians = {name: statistics.median(t) for name, t in times.items()}
        cells = " | ".join(f"{medians[n]:.2f} | {' '.join(f'{t:.2f}' for t in times[n])}" for n in modules)
        ratio = f" {medians['this'] / medians['baseline']:.2f} |" if len(modules) > 1 else ""
        print(f"| {label} | {len(frame) / count:.0f} | {cells} |{ratio}")
    return 0
