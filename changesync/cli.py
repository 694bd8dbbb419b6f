"""The ``changesync`` command: ``serve``, ``demo``, ``check``, ``preview``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError
from .settings import DECLARATIONS, Settings, load_settings

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

# The settings each command takes as flags (their flags are declared with the settings).
SERVE_SETTINGS = ("mongodb_uri", "database", "host", "port", "log.level")
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "serve": ("run the service", (*SERVE_SETTINGS, "workers")),
    "demo": ("run an embedded database, the service and a demo writer, with a token to try it", SERVE_SETTINGS),
    "check": (
        "verify that the deployment can serve change streams and the routes have pre-images",
        ("mongodb_uri", "database"),
    ),
    "preview": ("show what clients would receive for captured change events (offline)", ()),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="changesync", description="MongoDB change streams as typed, per-flow SSE.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers = {}
    for name, (summary, keys) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")
        sub.add_argument("--config", metavar="FILE", help="TOML config file (default: $CHANGESYNC_CONFIG)")
        for key in keys:
            declaration = DECLARATIONS[key]
            sub.add_argument(
                declaration.flag,
                dest=key,
                metavar=key.rpartition(".")[2].upper(),
                help=f"{declaration.help.rstrip('.')} (default: {declaration.default}; {declaration.env})"
                if not declaration.secret
                else f"{declaration.help.rstrip('.')} ({declaration.env})",
            )
        subparsers[name] = sub
    subparsers["demo"].add_argument(
        "--external", action="store_true", help="use --mongodb-uri instead of starting the embedded database"
    )
    subparsers["check"].add_argument(
        "--fix", action="store_true", help="enable pre-/post-images on routes that need them"
    )
    subparsers["check"].add_argument("--verbose", action="store_true", help="show the driver's details of failures")
    subparsers["preview"].add_argument(
        "events", metavar="EVENTS", help="file of change events, one Extended JSON per line (- for stdin)"
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {key: getattr(args, key) for key in COMMANDS[args.command][1]}
    # The demo's own key (changesync.demo.with_demo_auth) replaces any key source configured.
    return load_settings(args.config, environ=os.environ, overrides=overrides, serving=args.command == "serve")


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
            return _check(settings, fix=args.fix, verbose=args.verbose)
        return _preview(settings, args.events)
    except KeyboardInterrupt:
        return EXIT_OK


def _serve(settings: Settings) -> int:
    from .logs import configure_logging
    from .server import serve
    from .workers import run_workers

    configure_logging(settings.log)
    if settings.workers > 1:
        return run_workers(settings)
    serve(settings)
    return EXIT_OK


def _demo(settings: Settings, *, external: bool) -> int:
    from .demo import run_demo
    from .errors import EmbeddedServerError
    from .logs import configure_logging

    configure_logging(settings.log)
    try:
        return asyncio.run(run_demo(settings, use_embedded=not external))
    except EmbeddedServerError as exc:
        print(f"changesync demo: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _check(settings: Settings, *, fix: bool, verbose: bool) -> int:
    from .check import run_check

    report = asyncio.run(run_check(settings, fix=fix))
    print(report.render(verbose=verbose))
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
        for _, text, is_error in preview_lines(source, pipeline, max_event_bytes=settings.limits.max_event_bytes):
            if is_error:
                errors += 1
                print(text, file=sys.stderr)
            else:
                print(text + "\n")
    return EXIT_PROBLEMS if errors else EXIT_OK
