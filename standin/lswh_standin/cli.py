"""`python -m lswh_standin`: serve the stand-in with uvicorn."""

from __future__ import annotations

import argparse
import os

from lswh_standin.app import create_app, env_flag
from lswh_standin.profiles import PROFILES
from lswh_standin.tenants import parse_required


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lswh_standin", description="A local LangSmith stand-in.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1984)
    parser.add_argument("--latency-ms", type=int, default=int(os.environ.get("STANDIN_LATENCY_MS") or 0))
    parser.add_argument(
        "--preload-fixture", action="store_true", default=env_flag("STANDIN_PRELOAD_FIXTURE"),
        help="store the docs fixture's run (also STANDIN_PRELOAD_FIXTURE=1)",
    )
    parser.add_argument(
        "--no-limits", action="store_true", default=env_flag("STANDIN_NO_LIMITS"),
        help="lift LangSmith Cloud's per-key rate limits, e.g. for a demo (also STANDIN_NO_LIMITS=1)",
    )
    parser.add_argument(
        "--flags", choices=list(PROFILES), default=os.environ.get("STANDIN_FLAGS") or "cloud",
        help="which server /info describes (also STANDIN_FLAGS): cloud = v2 and v1 run reads, "
        "v1-only = a server before v2 (< 0.16), v2-only = SmithDB only (no v1 run reads), "
        "v2-only-unversioned = the same with an empty version, v2-only-old = SmithDB only at 0.16.9 "
        "(no annotation-queue items)",
    )
    parser.add_argument(
        "--info-failures", type=int, metavar="N", default=os.environ.get("STANDIN_INFO_FAILURES") or "0",
        help="answer the first N GET /info with 503 (also STANDIN_INFO_FAILURES)",
    )
    parser.add_argument(
        "--require-header", default=os.environ.get("STANDIN_REQUIRE_HEADER") or None, metavar="NAME:VALUE",
        help="answer 421 to LangSmith requests without this header, e.g. one a test's proxy adds "
        "(also STANDIN_REQUIRE_HEADER)",
    )
    parser.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this certificate (tests of CA bundles)")
    parser.add_argument("--ssl-keyfile", default=None, help="the certificate's private key")
    args = parser.parse_args(argv)
    if args.info_failures < 0:
        parser.error(f"--info-failures / STANDIN_INFO_FAILURES must be 0 or more, not {args.info_failures}")
    if args.flags not in PROFILES:  # argparse checks choices on the command line, not on a default
        parser.error(f"STANDIN_FLAGS={args.flags!r}: one of {', '.join(PROFILES)}")

    import uvicorn

    try:
        parse_required(args.require_header)
    except ValueError as exc:
        parser.error(str(exc))
    standin = create_app(
        latency_ms=args.latency_ms, preload_fixture=args.preload_fixture, limits=not args.no_limits, flags=args.flags,
        require_header=args.require_header,
        info_failures=args.info_failures,
    )
    uvicorn.run(standin, host=args.host, port=args.port, access_log=False, log_level="warning",
                ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
