"""``npm ci`` of a locked package into a cache shared by test sessions, keyed by its lockfile.

Imported by tests as ``npm_cache``. A failing or slow npm skips the calling test with the reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# A cold `npm ci` takes seconds here; allow slow mirrors, then skip.
NPM_CI_TIMEOUT_S = 180


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "changesync-tests"


def install(package_dir: Path, *, prefix: str, npm: str, extra_args: tuple[str, ...] = ()) -> Path:
    """The directory holding ``package_dir``'s locked ``node_modules`` (installed on first use)."""
    lock_hash = hashlib.sha256((package_dir / "package-lock.json").read_bytes()).hexdigest()[:16]
    target = cache_home() / f"{prefix}-{lock_hash}"
    if (target / "node_modules").is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Staged and renamed into place, so a concurrent session never sees a half-installed tree; if
    # another session wins the rename, its tree is as good as ours.
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(package_dir / name, staging / name)
        try:
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", *extra_args],
                cwd=staging,
                capture_output=True,
                text=True,
                timeout=NPM_CI_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm ci did not finish within {NPM_CI_TIMEOUT_S} s")
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"npm ci of {package_dir.name} failed with exit code {result.returncode}: {last}")
        try:
            staging.rename(target)
        except OSError:
            if not (target / "node_modules").is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
