"""The `lswh` command line: one subcommand per process the pipeline runs, plus two operator tools.

Each subcommand imports what it needs inside its function, so `lswh ingress` never loads the
workers' dependencies and `lswh healthcheck` (run every few seconds by Docker) loads almost nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence

from lswh_core import egress
from lswh_core.settings import Settings, SettingsError

HOW_TO_SET_LSWH_SECRETS = (
    "set LSWH_SECRETS to one or more comma-separated secrets, e.g.\n"
    "  export LSWH_SECRETS=$(python -c 'import secrets; print(secrets.token_urlsafe(24))')"
)


def check_rules(settings: Settings) -> None:
    """A mistake in the rules file stops every process at start (RulesError is a SettingsError:
    exit 2 with file, line and key), never a run at run time."""
    if settings.rules_file:
        from lswh_core.rules import load_rules

        load_rules(settings.rules_file, settings)


def ingress(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not settings.secrets:
        print(f"lswh ingress: no webhook secret configured: {HOW_TO_SET_LSWH_SECRETS}", file=sys.stderr)
        return 2
    check_rules(settings)

    import uvicorn

    from lswh_core.logs import skip_unused_record_attributes, uvicorn_log_config

    skip_unused_record_attributes()
    uvicorn.run(
        "ingress.app:app",
        host=args.host,
        port=args.port,
        log_config=uvicorn_log_config(settings.log_format),
        # Off: it prints the query string (the secret), and redacting it halved throughput. The
        # app logs its own line per delivery (outcome, delivery_id, runs, bytes, ms).
        access_log=False,
        # Off: nothing here reads the client's address or scheme, and the middleware is a layer
        # every request passes through.
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=5,
        # Stop quickly: LangSmith retries a refused connection, and compose/k8s wait for us.
        timeout_graceful_shutdown=5,
        # Bounds request line + headers when h11 is the parser (httptools caps its own).
        h11_max_incomplete_event_size=16 * 1024,
    )
    return 0


def worker(args: argparse.Namespace) -> int:
    check_rules(Settings.from_env())
    from workers.worker import main as worker_main

    return worker_main(burst=args.burst)


def dev(args: argparse.Namespace) -> int:
    check_rules(Settings.from_env())
    from lswh.dev import run

    return run(workers=args.workers, host=args.host, port=args.port, dashboard_port=args.dashboard_port)


def healthcheck(args: argparse.Namespace) -> int:
    if args.worker:
        return worker_healthcheck(args)
    import urllib.request

    # No proxies: a container's HTTP_PROXY must not route a check of localhost elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(args.url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except (OSError, ValueError):
        return 1


def worker_healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 when this container's worker has a fresh heartbeat in Redis (lswh/health.py)."""
    from lswh.health import worker_health
    from lswh_core.redis import sync_redis

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"lswh healthcheck: {exc}", file=sys.stderr)
        return 2
    connection = sync_redis(settings.redis_url, socket_timeout=3)
    alive, why = worker_health(connection, max_age=args.max_age)
    print(f"lswh healthcheck: {why}", file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


def status(args: argparse.Namespace) -> int:
    import redis

    from lswh import status as report
    from lswh_core.redis import sync_redis

    settings = Settings.from_env()
    if args.delivery_id and not report.valid_delivery_id(args.delivery_id):
        print(f"lswh status: {args.delivery_id!r} is not a delivery id (32 hex digits)", file=sys.stderr)
        return 2
    connection = sync_redis(settings.redis_url, socket_timeout=10)
    try:
        if args.delivery_id:
            lines, code = report.delivery_lines(connection, args.delivery_id)
        else:
            lines, code = report.overview(connection, settings.redis_url), 0
    except (redis.exceptions.RedisError, OSError) as exc:
        print(f"lswh status: cannot read Redis: {type(exc).__name__}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return code


def requeue(args: argparse.Namespace) -> int:
    if args.reason is not None:
        return _requeue_by_reason(args.reason)
    from lswh.status import failed_registry
    from lswh.status import requeue as requeue_jobs
    from lswh_core.contract import QUEUE
    from lswh_core.redis import sync_redis

    registry = failed_registry(sync_redis(Settings.from_env().redis_url))
    job_ids = registry.get_job_ids() if args.all else args.job_ids
    requeued, missing = requeue_jobs(registry, job_ids)
    for job_id in missing:
        print(f"lswh requeue: {job_id} is not in the failed registry of queue {QUEUE}", file=sys.stderr)
    print(f"requeued {requeued} job{'' if requeued == 1 else 's'}")
    return 0 if requeued == len(job_ids) else 1


def _requeue_by_reason(text: str) -> int:
    from lswh.status import requeue_by_reason
    from lswh_core.redis import sync_redis

    if not text.strip():
        print("lswh requeue: --reason needs some text of the failure reason", file=sys.stderr)
        return 2
    requeued, matched = requeue_by_reason(sync_redis(Settings.from_env().redis_url), text)
    print(f"requeued {requeued} job{'' if requeued == 1 else 's'} whose reason contains {text!r}")
    return 0 if matched and requeued == matched else 1


def _window(args: argparse.Namespace) -> tuple[dt.datetime, dt.datetime]:
    """--since D, or --from T --to T (ISO 8601; UTC when no offset is given)."""
    from lswh.backfill import parse_time
    from lswh_core.durations import parse_duration

    now = dt.datetime.now(dt.UTC)
    if args.since is not None and args.to_time is not None:
        raise ValueError("--to goes with --from, not with --since")
    if args.since is not None:
        return now - dt.timedelta(seconds=parse_duration(args.since)), now
    if args.from_time is None or args.to_time is None:
        raise ValueError("give --since, or both --from and --to")
    start, end = parse_time(args.from_time), parse_time(args.to_time)
    if start >= end:
        raise ValueError("--from must be before --to")
    return start, end


def backfill(args: argparse.Namespace) -> int:
    check_rules(Settings.from_env())
    egress.check()  # it talks to LangSmith as a worker does: the same proxy/CA checks (exit 2)
    from lswh.backfill import BackfillRefused, run

    try:
        start, end = _window(args)
    except ValueError as exc:
        print(f"lswh backfill: {exc}", file=sys.stderr)
        return 2
    try:
        return run(args.rule, start, end, dry_run=args.dry_run, ignore_sampling=args.ignore_sampling)
    except BackfillRefused as exc:
        print(f"lswh backfill: {exc}", file=sys.stderr)
        return 2
    except SettingsError:
        raise
    except Exception as exc:  # LangSmith or Redis unreachable, key refused: one line, no URL query
        from lswh_core.redact import redact

        print(f"lswh backfill: {type(exc).__name__}: {redact(str(exc)).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 1


def replay(args: argparse.Namespace) -> int:
    from lswh import replay as replaying
    from lswh.status import valid_delivery_id
    from lswh_core.durations import parse_duration
    from lswh_core.redis import sync_redis

    settings = Settings.from_env()
    connection = sync_redis(settings.redis_url, socket_timeout=10)
    if args.rule is not None:
        if args.delivery_ids or args.since is None:
            print("lswh replay: give DELIVERY_ID..., or --rule RULE_ID --since D", file=sys.stderr)
            return 2
        try:
            since = parse_duration(args.since)
        except ValueError as exc:
            print(f"lswh replay: --since: {exc}", file=sys.stderr)
            return 2
        ids = replaying.rule_deliveries(connection, args.rule, since)
    else:
        bad = [d for d in args.delivery_ids if not valid_delivery_id(d)]
        if bad or not args.delivery_ids:
            print(f"lswh replay: not delivery ids (32 hex digits): {bad}" if bad
                  else "lswh replay: give DELIVERY_ID..., or --rule RULE_ID --since D", file=sys.stderr)
            return 2
        ids = list(args.delivery_ids)
    results = replaying.replay(connection, settings, ids)
    for result in results:
        print(f"{result.delivery_id}: {result.runs} runs, job {result.job_id}" if result.job_id
              else f"{result.delivery_id}: not replayed: {result.problem}")
    replayed = sum(1 for r in results if r.job_id)
    print(f"replayed {replayed} deliver{'y' if replayed == 1 else 'ies'}")
    # Named ids must all replay; a rule's older deliveries may have outlived their bodies.
    return 0 if args.rule is not None or replayed == len(results) else 1


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="lswh", description="LangSmith webhook -> Redis -> dataset examples.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("ingress", help="serve the webhook ingress with uvicorn")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=ingress)

    p = commands.add_parser("worker", help="run an RQ worker on the pipeline's queue (scheduler on)")
    p.add_argument("--burst", action="store_true", help="exit once the queue and its registries are empty")
    p.set_defaults(func=worker)

    p = commands.add_parser("dev", help="the whole pipeline on this machine, nothing set up")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--dashboard-port", type=int, default=9181)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=dev)

    p = commands.add_parser("healthcheck", help="exit 0 if the URL answers 200 within 2 s, else 1; "
                            "with --worker: if this container's worker has a fresh heartbeat in Redis")
    p.add_argument("--url", default="http://127.0.0.1:8000/readyz")
    p.add_argument("--worker", action="store_true",
                   help="check the worker registered from this host (REDIS_URL) instead of a URL")
    p.add_argument("--max-age", type=float, default=60.0, metavar="SECONDS",
                   help="with --worker: oldest heartbeat that still counts as alive (default 60)")
    p.set_defaults(func=healthcheck)

    p = commands.add_parser("status", help="queue, workers, failed jobs by reason; or one delivery's runs")
    p.add_argument("delivery_id", nargs="?", metavar="DELIVERY_ID",
                   help="where this delivery's runs went: received = written + ... + pending")
    p.set_defaults(func=status)

    p = commands.add_parser("requeue", help="requeue failed jobs from RQ's failed registry")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every failed job of the pipeline's queue")
    which.add_argument("--reason", metavar="TEXT",
                       help="jobs whose failure reason contains TEXT (as `lswh status` prints it)")
    which.add_argument("job_ids", nargs="*", default=[], metavar="JOB_ID")
    p.set_defaults(func=requeue)

    p = commands.add_parser(
        "backfill", help="write the runs a rule matched in a window, through the job path (needs workers)",
        description="Read the rule through the LangSmith API, list the runs it matched in the window and feed "
                    "them through the same job path as a webhook delivery: runs already written stay unchanged, "
                    "nothing is written twice. Needs workers running (`lswh worker`, or `lswh dev`). Shows a "
                    "progress bar on a terminal and a summary at the end; exits 1 when any run failed.")
    p.add_argument("--rule", required=True, metavar="RULE_ID")
    window = p.add_mutually_exclusive_group(required=True)
    window.add_argument("--since", metavar="DURATION", help="from this long ago until now, e.g. 2h, 30m, 7d")
    window.add_argument("--from", dest="from_time", metavar="TIME", help="window start, ISO 8601 (with --to)")
    p.add_argument("--to", dest="to_time", metavar="TIME", help="window end, ISO 8601")
    p.add_argument("--dry-run", action="store_true", help="only count the matching runs")
    p.add_argument("--ignore-sampling", action="store_true",
                   help="backfill a rule that samples below 1 (writes runs the rule never chose)")
    p.set_defaults(func=backfill)

    p = commands.add_parser(
        "replay", help="process stored deliveries again, all their runs (kept LSWH_REPLAY_DAYS; needs workers)")
    p.add_argument("delivery_ids", nargs="*", default=[], metavar="DELIVERY_ID")
    p.add_argument("--rule", metavar="RULE_ID", help="every stored delivery of this rule received within --since")
    p.add_argument("--since", metavar="DURATION", help="with --rule: e.g. 2h")
    p.set_defaults(func=replay)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as e:
        print(f"lswh {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
