"""Fixtures for the neocloud end-to-end tests.

The tests start the real binary:

* ``NEOCLOUD_BIN`` if set, else ``$CARGO_TARGET_DIR/debug/neocloud``, else
  ``<repo>/target/debug/neocloud``;
* with the model cache in ``NEOCLOUD_CACHE`` if set (reused across runs, so
  only the first run downloads the model), else in a temporary directory;
* ``NEOCLOUD_STARTUP_TIMEOUT`` (seconds, default 300) bounds the wait for
  ``GET /v2/health/ready``.

Run:  python -m pytest tests/e2e -v
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))  # any --import-mode
import e2e_util as u  # noqa: E402


@pytest.fixture(scope="session")
def ref() -> u.Reference:
    return u.load_reference()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    if os.environ.get("NEOCLOUD_CACHE"):
        p = Path(os.environ["NEOCLOUD_CACHE"])
        p.mkdir(parents=True, exist_ok=True)
        return p
    return tmp_path_factory.mktemp("cache")


def _serve(tmp_path_factory, cache_dir: Path, name: str, config: str | None):
    server = u.Server(tmp_path_factory.mktemp(name), cache_dir, config=config, name=name)
    try:
        server.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    try:
        rc = server.stop()
    finally:
        server.kill()
    assert rc == 0, f"{name} exited with {rc} after SIGTERM; output:\n{server.log_tail()}"


@pytest.fixture(scope="session")
def server(tmp_path_factory, cache_dir) -> u.Server:
    """The default server: serves all-minilm-l6-v2 with default settings."""
    yield from _serve(tmp_path_factory, cache_dir, "neocloud", None)


@pytest.fixture(scope="session")
def tiny_queue_server(tmp_path_factory, cache_dir, server) -> u.Server:
    """A second server, `tiny-queue`: one request per batch, a queue of one.

    Depends on `server` so that the model is already in the shared cache.
    """
    yield from _serve(tmp_path_factory, cache_dir, "tiny-queue", u.TINY_QUEUE_CONFIG)


@pytest.fixture(scope="session")
def gemma_server(tmp_path_factory, cache_dir) -> u.Server:
    """A server for Gemma-3-270M only (a second architecture and template)."""
    yield from _serve(tmp_path_factory, cache_dir, "gemma", u.GEMMA_CONFIG)


@pytest.fixture(scope="session")
def url(server) -> str:
    return server.url


@pytest.fixture()
def http() -> requests.Session:
    with requests.Session() as s:
        yield s
