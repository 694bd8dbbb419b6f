"""The compose ``demo`` profile's writer: edits the demo flow in MongoDB until stopped.

``changesync demo --external`` would also start a second service; this script only writes, so the
compose ``changesync`` service is the one clients watch. It reads ``CHANGESYNC_MONGODB_URI`` and
``CHANGESYNC_DATABASE`` (validated as the service validates them) and no other setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping

from changesync.demo import DEMO_FLOW_ID, write_forever
from changesync.errors import ConfigError
from changesync.mongo import open_database
from changesync.settings import env_name, load_settings, redact_uri

EXIT_OK, EXIT_USAGE = 0, 2
SETTING_KEYS = ("mongodb_uri", "database")


def read_target(environ: Mapping[str, str]) -> tuple[str, str]:
    """The MongoDB URI and database from the environment; other variables are left to the service."""
    names = {env_name(key) for key in SETTING_KEYS}
    settings = load_settings(environ={name: value for name, value in environ.items() if name in names})
    return settings.mongodb_uri, settings.database


async def run(uri: str, database: str) -> None:
    target = open_database(uri, database)
    main_task = asyncio.current_task()
    if main_task is not None:
        # As PID 1 in a container, the default SIGTERM disposition is ignored: stop on it explicitly.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        await write_forever(target.raw)
    finally:
        await target.close()


def main() -> int:
    try:
        uri, database = read_target(os.environ)
    except ConfigError as exc:
        print(f"demo_writer: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"demo_writer: editing flow {DEMO_FLOW_ID!r} in database {database!r} on {redact_uri(uri)}", flush=True)
    # Ctrl+C or SIGTERM (docker stop) is the normal end.
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(run(uri, database))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
