"""``python -m changesync.schema [--check]``: write (or check) ``changesync/schema/events.json``."""

import sys

from .generate import main

sys.exit(main())
