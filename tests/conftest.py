"""Shared fixtures: where the offline CIFAR-10 copy lives (../shared/data beside the checkout), and a PostgreSQL
server for the distributed-study tests (SLOWAI_TEST_PG_URL, else a throwaway one started here)."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
PG_ENV = "SLOWAI_TEST_PG_URL"
PG_SCRIPT = ROOT / "scripts" / "postgres.sh"
NO_PG_BINARIES = 3  # postgres.sh --throwaway's exit status when no server binaries are installed


@pytest.fixture
def cifar_root() -> Path:
    """The data root holding cifar10/cifar10.npz; skips (with the path) where this checkout has no copy beside it."""
    npz = SHARED_DATA / "cifar10" / "cifar10.npz"
    if not npz.is_file():
        pytest.skip(f"offline CIFAR-10 copy not found at {npz}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pg_server_url():
    """A PostgreSQL storage URL: SLOWAI_TEST_PG_URL if set; else a throwaway server (scripts/postgres.sh --throwaway,
    a unix socket in a private temporary directory, no TCP) that is stopped and deleted at the end of the session.
    Skips only where no PostgreSQL server binaries are installed."""
    if os.environ.get(PG_ENV):
        yield os.environ[PG_ENV]
        return
    pg_dir = tempfile.mkdtemp(prefix="slowai-pg-")
    try:
        r = subprocess.run(["bash", str(PG_SCRIPT), "--throwaway", pg_dir], capture_output=True, text=True, timeout=180)
    except BaseException:
        _stop_pg(pg_dir)
        raise
    if r.returncode:
        _stop_pg(pg_dir)
        if r.returncode == NO_PG_BINARIES:
            pytest.skip(f"no PostgreSQL server: install postgresql or export {PG_ENV}=$(bash scripts/postgres.sh)")
        pytest.fail(f"could not start a throwaway PostgreSQL server: {r.stderr.strip()}", pytrace=False)
    try:
        yield r.stdout.strip()
    finally:
        _stop_pg(pg_dir)


def _stop_pg(pg_dir: str) -> None:
    subprocess.run(["bash", str(PG_SCRIPT), "--stop", pg_dir], capture_output=True, timeout=120)
    shutil.rmtree(pg_dir, ignore_errors=True)  # the script refuses a directory it did not set up (initdb never ran)


def _may_use_pg(item: pytest.Item) -> bool:
    """Uses a PostgreSQL fixture, or lives in a module defining one (a test may request it by getfixturevalue)."""
    names = ("pg_url", "pg_server_url")
    fixtures = getattr(item, "fixturenames", ())
    return any(n in fixtures or hasattr(getattr(item, "module", None), n) for n in names)


@pytest.fixture(scope="session", autouse=True)
def _pg_server_for_env(request):
    """Exports pg_server_url as SLOWAI_TEST_PG_URL (for fixtures and worker processes that read it) when a collected
    test may use PostgreSQL; a session without such tests starts no server."""
    if os.environ.get(PG_ENV) or not any(map(_may_use_pg, request.session.items)):
        yield
        return
    try:
        url = request.getfixturevalue("pg_server_url")
    except pytest.skip.Exception:  # no server binaries: the PostgreSQL tests skip with their own message
        yield
        return
    os.environ[PG_ENV] = url
    try:
        yield
    finally:
        os.environ.pop(PG_ENV, None)


pytest_plugins = ["slurm_cluster", "redis_server"]  # throwaway Slurm and Redis servers (their modules here)
