"""The Ollama JavaScript client (npm ``ollama``) against the gateway.

The checks are in tests/processes/js/ollama_client_check.mjs. The package is installed with npm
into a temporary directory, once per run. Skipped when node or npm is missing, or when
the npm registry cannot be reached.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from tests.conftest import StartServer
from tests.support.helpers import deadline

SCRIPT = Path(__file__).parent / "js" / "ollama_client_check.mjs"
PACKAGE = "ollama@0.6.4"


@pytest.fixture(scope="session")
def ollama_js(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the Ollama JavaScript client")
    where = tmp_path_factory.mktemp("ollama-js")
    (where / "package.json").write_text('{"private": true, "type": "module"}\n')
    installed = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", PACKAGE],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if installed.returncode != 0:
        pytest.skip(f"npm could not install {PACKAGE}: {installed.stderr.strip()[-300:]}")
    shutil.copy(SCRIPT, where / SCRIPT.name)
    return where


@deadline(60)
async def test_the_ollama_javascript_client(start_server: StartServer, ollama_js: Path) -> None:
    server = await start_server()
    node = shutil.which("node")
    assert node is not None
    done = await trio.run_process(
        [node, SCRIPT.name, server.url],
        cwd=ollama_js,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    checked = json.loads(done.stdout.decode().strip().splitlines()[-1])["checked"]
    assert checked == [
        "version",
        "list, show",
        "chat, streaming and not",
        "generate, streaming and not",
        "supersede via X-Session-Id",
        "Stop",
        "abort()",
        "errors",
    ]
