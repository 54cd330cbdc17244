"""The package as users install it: ``python -m build``, the wheel in a fresh venv.

Builds the sdist and, from it, the wheel (what ``python -m build`` does), installs
the wheel with its dependencies into a new venv (pip, with ``constraints.txt`` and the
index this checkout's ``make install`` uses), then runs that venv's ``jarvis-trio``
outside the checkout: the Ollama simulator, and the gateway on it, which answers a
request, streamed and not, and serves the chat page with its script and style sheet.
About 15 s, most of it pip.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio

from jarvis_trio.testing import open_server_process
from tests.support.helpers import deadline, read_all_events

ROOT = Path(__file__).parents[2]
SERVE_READY = r"server_listening url=(http://\S+)"
SIM_READY = r"ollama_sim listening url=(http://\S+)"
# Nothing of this checkout or of the test's own venv may leak into the fresh one.
CLEAN_ENV = {"PYTHONPATH": "", "VIRTUAL_ENV": "", "PYTHONSAFEPATH": "1"}


async def run(argv: list[str], *, cwd: Path, within: float) -> str:
    with trio.fail_after(within):
        result = await trio.run_process(
            argv,
            cwd=cwd,
            env={**os.environ, **CLEAN_ENV},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out: str = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, f"{argv[:4]} failed:\n{out}"
    return out


@pytest.mark.slow
@deadline(170)
async def test_the_built_wheel_installs_and_serves_in_a_fresh_venv(tmp_path: Path) -> None:
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    started = time.monotonic()
    await run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], cwd=tmp_path, within=90
    )
    wheels = list(dist.glob("jarvis_trio-*.whl"))
    assert len(wheels) == 1
    built = time.monotonic()

    await run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, within=30)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    await run([*pip, "-c", str(ROOT / "constraints.txt"), str(wheels[0])], cwd=tmp_path, within=120)
    installed = time.monotonic()
    where = await run(
        [str(python), "-c", "import jarvis_trio; print(jarvis_trio.__file__)"],
        cwd=tmp_path,
        within=30,
    )
    assert Path(where.strip()).is_relative_to(venv), where  # the wheel, not this checkout

    jarvis = str(venv / "bin" / "jarvis-trio")
    sim_argv = [jarvis, "sim-ollama", "--port", "0"]
    async with open_server_process(sim_argv, SIM_READY, env=CLEAN_ENV, cwd=tmp_path) as sim:
        argv = [jarvis, "serve", "--port", "0", "--backend", "ollama", "--ollama-url", sim.url]
        async with (
            open_server_process(argv, SERVE_READY, env=CLEAN_ENV, cwd=tmp_path) as server,
            httpx.AsyncClient(base_url=server.url, timeout=20) as client,
        ):
            body = {
                "model": "llama3.2:1b",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3,
            }
            answer = await client.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"]
            async with client.stream(
                "POST", "/v1/chat/completions", json={**body, "stream": True}
            ) as r:
                events = await read_all_events(r)
            assert events[-1] == "[DONE]"

            page = await client.get("/")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert "chat.js" in page.text
            for asset in ("chat.js", "chat.css"):
                assert (await client.get(f"/static/{asset}")).status_code == 200
    print(
        f"wheel smoke test: build {built - started:.1f} s, venv + pip install "
        f"{installed - built:.1f} s, serve {time.monotonic() - installed:.1f} s"
    )
