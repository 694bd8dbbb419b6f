"""The ``changesync`` command: ``serve``, ``demo``, ``check``, ``preview``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError
from .settings import Settings, load_settings, validate_routes

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML config file (default: $CHANGESYNC_CONFIG)")
    common.add_argument("--mongodb-uri", metavar="URI", help="MongoDB URI (replica set or mongos)")
    common.add_argument("--database", metavar="NAME", help="database to watch")
    common.add_argument("--host", metavar="HOST", help="address to listen on (default 127.0.0.1)")
    common.add_argument("--port", metavar="PORT", type=int, help="port to listen on (default 8000)")
    common.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")

    parser = argparse.ArgumentParser(prog="changesync", description="MongoDB change streams as typed, per-flow SSE.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", parents=[common], help="run the service")
    demo = commands.add_parser(
        "demo", parents=[common], help="run the embedded database, the service and a demo writer"
    )
    demo.add_argument(
        "--external", action="store_true", help="use --mongodb-uri instead of starting the embedded database"
    )
    check = commands.add_parser("check", parents=[common], help="verify the deployment and the routes")
    check.add_argument("--fix", action="store_true", help="enable pre-/post-images on routes that need them")
    preview = commands.add_parser(
        "preview", parents=[common], help="show what clients would receive for captured change events"
    )
    preview.add_argument(
        "events", metavar="EVENTS", help="file of change events, one Extended JSON per line (- for stdin)"
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "mongodb_uri": args.mongodb_uri,
        "database": args.database,
        "host": args.host,
        "port": args.port,
        "log.level": args.log_level,
    }
    settings = load_settings(args.config, environ=os.environ, overrides=overrides)
    validate_routes(settings)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"changesync: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "serve":
            return _serve(settings)
        if args.command == "demo":
            return _demo(settings, external=args.external)
        if args.command == "check":
            return _check(settings, fix=args.fix)
        return _preview(settings, args.events)
    except ConfigError as exc:
        # Settings that only the service validates (keys, auth) surface when it is built.
        print(f"changesync: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


def _serve(settings: Settings) -> int:
    import uvicorn

    from .app import create_app
    from .logs import configure_logging
    from .server import tune_garbage_collection, uvicorn_config

    configure_logging(settings.log)
    tune_garbage_collection()
    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()
    return EXIT_OK


def _demo(settings: Settings, *, external: bool) -> int:
    from .demo import run_demo
    from .embedded import EmbeddedServerError
    from .logs import configure_logging

    configure_logging(settings.log)
    try:
        return asyncio.run(run_demo(settings, use_embedded=not external))
    except EmbeddedServerError as exc:
        print(f"changesync demo: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _check(settings: Settings, *, fix: bool) -> int:
    from .check import run_check

    report = asyncio.run(run_check(settings, fix=fix))
    print(report.render())
    return EXIT_PROBLEMS if report.failed else EXIT_OK


def _preview(settings: Settings, path: str) -> int:
    from filters import Pipeline

    from .preview import preview_lines

    pipeline = Pipeline(settings.routes, stages=settings.load_stages())
    try:
        source = sys.stdin if path == "-" else open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError as exc:
        print(f"changesync preview: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    errors = 0
    with source:
        for _, text, is_error in preview_lines(source, pipeline):
            if is_error:
                errors += 1
                print(text, file=sys.stderr)
            else:
                print(text + "\n")
    return EXIT_PROBLEMS if errors else EXIT_OK
