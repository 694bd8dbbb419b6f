"""changesync: MongoDB change streams as typed, per-flow Server-Sent Events."""

from .app import create_app
from .errors import ChangesyncError, ConfigError, SourceError
from .settings import Settings, load_settings

__all__ = [
    "ChangesyncError",
    "ConfigError",
    "Settings",
    "SourceError",
    "create_app",
    "load_settings",
]
__version__ = "0.1.0"
