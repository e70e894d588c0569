"""``python -m bench ingest``: events/s acknowledged, ACK p50/p99, and the raw PostgreSQL ceilings."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from app.store import db as app_db
from app.store import queries

from . import ceilings, cpu_profile, wsload
from .report import Row, disturbed, emit, is_disturbed
from .service import Database, Meter, Service, checkpoint, mib, service, wal_files


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=20, help="WebSocket connections (default 20)")
    p.add_argument("--batch", type=int, default=100, help="events per frame (default 100)")
    p.add_argument("--sessions", type=int, default=1000, help="sessions the events are spread over (default 1000)")
    p.add_argument("--window", type=int, default=8, help="frames in flight per connection (default 8)")
    p.add_argument(
        "--rate",
        default="half",
        help="'half' (default): a max-throughput run, then a fixed-rate run at half of it; "
        "'off': max-throughput only; a number: one fixed-rate run at that many events/s",
    )
    p.add_argument(
        "--mode",
        choices=["relay", "session"],
        default="relay",
        help="relay: /ws with session_id in every event (default); session: /ws?sessionId= per connection",
    )
    p.add_argument("--batch-ids", action="store_true", help="send envelopes with a unique batch_id (idempotency path)")
    p.add_argument("--copy-rows", type=int, default=200_000, help="rows for the COPY ceiling (at most what was ACKed)")
    p.add_argument("--copy-connections", type=int, default=4, help="connections for the COPY ceiling (default 4)")
    p.add_argument("--copy-chunk", type=int, default=10_000, help="rows per COPY, each its own commit (default 10000)")
    p.add_argument("--tx-events", type=int, default=2000, help="events for the one-transaction-per-event ceiling")
    p.add_argument("--no-ceilings", action="store_true", help="skip the raw PostgreSQL ceilings")
    p.add_argument(
        "--profile",
        action="store_true",
        help="record a perf profile of the whole machine during the first run: CPU per process and per ACKed event, "
        "and the events/s that work would allow on every core (needs perf and root)",
    )
    p.add_argument(
        "--breakdown",
        action="append",
        default=[],
        metavar="NAME:KEY",
        help="give this (name, key) pair a breakdown rollup before the runs, as a first /stats/breakdown would "
        "(repeatable; the events' names are name00..name19, their keys path (50 values a name) and i (unique))",
    )


def config(args: argparse.Namespace) -> wsload.IngestConfig:
    return wsload.IngestConfig(
        clients=args.clients,
        batch=args.batch,
        sessions=args.sessions,
        window=args.window,
        duration=args.duration,
        warmup=args.warmup,
        mode=args.mode,
        batch_ids=args.batch_ids,
    )


def per(seconds: float | None, count: float) -> float | None:
    """Microseconds of CPU per unit."""
    return None if seconds is None or not count else seconds / count * 1e6


def ingest_row(
    name: str, cfg: wsload.IngestConfig, workers: int, res: wsload.IngestResult, m: dict[str, Any], rss: int | None
) -> Row:
    p50, p99 = res.latency.p50_p99_ms()
    events = res.events
    return {
        "run": name,
        "workers": workers,
        "clients×batch×window": f"{cfg.clients}×{cfg.batch}×{cfg.window}",
        "target ev/s": cfg.rate,
        "events/s": res.events_per_s,
        "ACK p50 ms": p50,
        "ACK p99 ms": p99,
        "server CPU s": m.get("server"),
        "PG CPU s": m.get("db"),
        "client CPU s": m.get("client"),
        "other CPU s": m.get("other"),
        "disturbed": disturbed(m),
        "server µs/ev": per(m.get("server"), events),
        "PG µs/ev": per(m.get("db"), events),
        "server RSS MiB": mib(rss),
        "errors": res.errors,
    }


async def phase(
    svc: Service, db: Database, cfg: wsload.IngestConfig, sids: list[str], *, profile: bool = False
) -> tuple[wsload.IngestResult, dict[str, Any], cpu_profile.ProfilingMeter | None]:
    if not profile:
        meter = Meter(svc.tree, db.tree)
        res = await wsload.run(svc.ws, cfg, sids, meter)
        return res, meter.result, None
    profiling = cpu_profile.ProfilingMeter(svc.tree, db.tree, db.url)
    try:
        res = await wsload.run(svc.ws, cfg, sids, profiling)
    except BaseException:
        await profiling.finish()
        await profiling.read()  # removes its files
        raise
    await profiling.finish()  # perf stopped; its samples are read after every run (read())
    return res, profiling.result, profiling


async def _register_breakdowns(url: str, pairs: list[str]) -> str:
    """The pairs' rollups (schema/010_breakdown_rollups.sql), their names made first."""
    conn = await app_db.connect(url)
    try:
        for pair in pairs:
            name, _, key = pair.partition(":")
            if not name or not key:
                raise SystemExit(f"--breakdown {pair!r}: give NAME:KEY")
            await conn.fetchval("SELECT event_name_id($1)", name)
            if not await conn.fetchval(queries.BREAKDOWN_REGISTER, name, key, 1_000_000):
                raise SystemExit(f"--breakdown {pair!r}: no rollup was made")
    finally:
        await conn.close()
    return f"Breakdown rollups kept during the runs: {', '.join(pairs)}."


async def main(args: argparse.Namespace, db: Database) -> None:
    base = config(args)
    sids = wsload.session_ids(base.sessions)
    rows: list[Row] = []
    notes: list[str] = []
    async with service(db, workers=args.workers, extra_args=args.server_arg) as svc:
        if args.breakdown:
            notes.append(await _register_breakdowns(db.url, args.breakdown))
        runs: list[tuple[str, float | None]]
        if args.rate == "off":
            runs = [("max", None)]
        elif args.rate == "half":
            runs = [("max", None), ("half load", -1.0)]
        else:
            runs = [("fixed rate", float(args.rate))]
        best = 0.0
        best_disturbed: str | None = None
        profiled: tuple[str, cpu_profile.ProfilingMeter, int] | None = None
        server_pids = {p.pid for p in svc.tree.processes()}
        for name, rate in runs:
            if rate == -1.0:
                rate = max(1.0, best / 2)
            cfg = dataclasses.replace(base, rate=rate)
            if db.warmed:
                await checkpoint(db.url)  # each phase reuses the WAL files of the ones before it
            files_before = await wal_files(db.url)
            res, m, found = await phase(svc, db, cfg, sids, profile=args.profile and profiled is None)
            files_after = await wal_files(db.url)
            if found is not None:
                profiled = (name, found, res.events)
            row = ingest_row(name, cfg, args.workers, res, m, svc.tree.rss_bytes())
            if files_before is not None and files_after is not None:
                row["new WAL files"] = max(0, files_after - files_before)
            if res.events_per_s > best:
                best, best_disturbed = res.events_per_s, row["disturbed"]
            rows.append(row)
            if res.first_error:
                notes.append(f"{name}: {res.errors} errors, first: `{res.first_error}`")
            if res.late_frames:
                notes.append(f"{name}: {res.late_frames} frames never acknowledged")
        ceiling: float | None = None
        if not args.no_ceilings and best > 0:
            if db.warmed:
                await checkpoint(db.url)
            count = max(args.tx_events, min(args.copy_rows, int(best * base.duration)))
            copy, tx = await ceilings.measure(
                db.url,
                ceilings.same_rows(base, sids, count),
                copy_connections=args.copy_connections,
                copy_chunk=args.copy_chunk,
                tx_events=args.tx_events,
                meter=lambda: Meter(svc.tree, db.tree),
            )
            for label, c in (
                (f"COPY ceiling ({args.copy_connections} conns, {args.copy_chunk} rows/commit)", copy),
                ("1 transaction per event (1 conn)", tx),
            ):
                rows.append(
                    {
                        "run": label,
                        "events/s": c.rows_per_s,
                        "PG CPU s": c.db_cpu,
                        "other CPU s": (c.meter or {}).get("other"),
                        "disturbed": disturbed(c.meter or {}),
                        "PG µs/ev": per(c.db_cpu, c.rows),
                        "errors": 0,
                    }
                )
            shaky = [
                f"{what} ({state})"
                for what, state in (
                    ("our max run", best_disturbed),
                    ("the COPY ceiling", disturbed(copy.meter or {})),
                    ("one transaction per event", disturbed(tx.meter or {})),
                )
                if is_disturbed(state)
            ]
            ceiling = copy.rows_per_s
            notes.append(
                f"Ours (max {best:,.0f} events/s) = **{best / copy.rows_per_s:.2f}× the COPY ceiling** "
                f"({copy.rows_per_s:,.0f} rows/s over {copy.rows:,} rows) and "
                f"**{best / tx.rows_per_s:.1f}× one transaction per event** ({tx.rows_per_s:,.0f}/s over {tx.rows:,}), "
                "all three measured in this run on the same database"
                + (f"; **disturbed**: {', '.join(shaky)}, so the ratios are not reliable." if shaky else ", none disturbed.")
            )
    notes.append(
        "ACK latency: from the frame's send time (max runs) or its scheduled send time (fixed rate, so a full "
        "window counts against the server), to its ACK. CPU: seconds over the measured window, summed over the "
        "process tree. The ceilings write into `LIKE events INCLUDING ALL` copies: no triggers, no foreign keys."
    )
    if db.warmed:
        notes.append(
            "WAL: the throwaway cluster wrote max_wal_size of WAL before the runs and checkpoints before each, as a "
            "cluster that has run a while recycles its WAL files; *new WAL files* counts those created during a run "
            "anyway (each one stalls the commits in flight; `--fresh-wal` measures a new cluster)."
        )
    emit(f"ingest ({base.duration:g} s measured after {base.warmup:g} s warm-up, mode {base.mode})", rows, notes)
    if profiled is not None:
        name, profiling, events = profiled
        found = await profiling.read()
        if found.missing:
            print(f"\nNo profile of the {name} run: {found.missing}.", flush=True)
        else:
            emit(
                f"where the CPU of the {name} run went (perf at {cpu_profile.HZ} Hz on every core)",
                cpu_profile.rows(found, events, server_pids),
                [cpu_profile.bound_note(found, events, ceiling, server_pids)],
            )
