"""The sweep as a person sees it in MLflow's UI: a real `mlflow server`, a small digits sweep run
through the `glth` CLI, and the experiment opened in headless Chromium (Debian's `chromium`).

The page is driven over the DevTools protocol (the browser is started with
``--remote-debugging-port`` on 127.0.0.1), because MLflow's runs table folds child runs under
their parent until someone clicks it open. Asserted on the rendered page: the runs view with the
parent and every child by name, their Source and Dataset columns, and the chart view drawing the
parent's curve metrics. With ``GLTH_SCREENSHOTS=1`` the screenshots go to
``docs/figures/mlflow_runs.png`` and ``docs/figures/mlflow_chart.png`` (the README's).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from procs import MlflowServer

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
SIZE = (1400, 900)
SPEC = """
name: ui-digits
experiment: glth-ui-test
dataset: digits
model: mlp_300_100
dictionary:
  - {kind: canonical}
  - {kind: bottleneck, layer: "1", basis: dct}
tau: 0.5
seeds: [0, 1]
rounds: 3
train: {epochs: 1, batch_size: 64, lr: 0.05}
resources: {cpu: 1}
max_concurrent: 2
"""
CLOSE_ASSISTANT = """(() => { const b = document.querySelector(
  'button[data-component-id="mlflow.assistant.chat_panel.close"]'); if (b) b.click(); return !!b; })()"""
#: the +/- beside a parent run's name in the runs table
EXPAND_PARENT = """(() => { const b = document.querySelector(
  'button[data-component-id$="runnamecellrenderer.tsx_46"]'); if (b) b.click(); return !!b; })()"""
FOCUS_CHART_SEARCH = """(() => { const i = document.querySelector('input[placeholder="Search metric charts"]');
  if (i) i.focus(); return !!i; })()"""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium)"),
]


class Browser:
    """Headless Chromium on a private profile, driven over the DevTools protocol (aiohttp)."""

    def __init__(self, profile: Path):
        self.profile = profile
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                f"--window-size={SIZE[0]},{SIZE[1]}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--no-first-run",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.n = 0

    async def __aenter__(self) -> "Browser":
        import aiohttp

        port_file = self.profile / "DevToolsActivePort"  # Chromium writes the port it chose
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"chromium gave no DevTools port (exit {self.proc.poll()})")
            await asyncio.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        self.http = aiohttp.ClientSession()
        async with self.http.get(f"http://127.0.0.1:{port}/json/list") as r:
            page = next(t for t in await r.json() if t["type"] == "page")
        self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self.call("Page.enable")
        await self.call(
            "Emulation.setDeviceMetricsOverride", width=SIZE[0], height=SIZE[1], deviceScaleFactor=1, mobile=False
        )
        return self

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()
        await self.http.close()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    async def call(self, method: str, **params) -> dict:
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expression: str):
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return r.get("result", {}).get("value")

    async def text_with(self, *texts: str, timeout: float = 90) -> str:
        """The page's rendered text once it shows every one of ``texts``."""
        deadline, body = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            body = await self.js("document.body ? document.body.innerText : ''") or ""
            if all(t in body for t in texts):
                return body
            await asyncio.sleep(0.5)
        missing = [t for t in texts if t not in body]
        raise AssertionError(f"not rendered within {timeout:.0f}s: {missing}\npage text: {body[:3000]}")

    async def screenshot(self, path: Path) -> None:
        data = base64.b64decode((await self.call("Page.captureScreenshot", format="png"))["data"])
        path.write_bytes(data)


def run_sweep(tmp: Path, uri: str) -> subprocess.CompletedProcess:
    (tmp / "spec.yaml").write_text(SPEC)
    glth = str(Path(sys.executable).with_name("glth"))
    return subprocess.run(
        [glth, "run", "spec.yaml", "--out", "out", "--tracking-uri", uri],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_the_sweep_in_mlflows_ui_shows_runs_and_the_curves(tmp_path):
    pytest.importorskip("aiohttp", reason="aiohttp (a Ray dependency) drives Chromium's DevTools protocol")
    server = MlflowServer(tmp_path).start()
    try:
        proc = run_sweep(tmp_path, server.uri)
        assert proc.returncode == 0, proc.stderr[-3000:]

        # what the UI should show, read through MLflow's API
        c = MlflowClient(server.uri)
        exp = c.get_experiment_by_name("glth-ui-test")
        assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
        [parent] = c.search_runs([exp.experiment_id], "tags.`glth.role` = 'parent'")
        kids = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert len(kids) == 4 and {k.info.status for k in kids} == {"FINISHED"}
        assert parent.info.status == "FINISHED"
        names = sorted(k.info.run_name for k in kids)
        assert len(set(names)) == 4
        curve_keys = sorted(
            k for k in parent.data.metrics if k.startswith("curve/") and k.endswith("/test_accuracy_mean")
        )
        assert len(curve_keys) == 2  # one per dictionary: seeds are averaged
        for key in curve_keys:
            assert sorted(m.step for m in c.get_metric_history(parent.info.run_id, key)) == [0, 1, 2]
        digest = c.get_run(kids[0].info.run_id).inputs.dataset_inputs[0].dataset.digest

        shots = REPO / "docs" / "figures" if os.environ.get("GLTH_SCREENSHOTS") == "1" else tmp_path
        shots.mkdir(parents=True, exist_ok=True)
        base = f"{server.uri}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"

        async def look() -> tuple[str, str]:
            (tmp_path / "profile").mkdir()
            async with Browser(tmp_path / "profile") as b:
                await b.call("Page.navigate", url=base)
                await b.text_with(parent.info.run_name, "matching runs")
                await b.js(CLOSE_ASSISTANT)
                assert await b.js(EXPAND_PARENT), "no expander beside the parent run"
                runs = await b.text_with(*names)
                await asyncio.sleep(1)  # let the table settle before the picture
                await b.screenshot(shots / "mlflow_runs.png")

                await b.call("Page.navigate", url=f"{base}&compareRunsMode=CHART")
                await b.text_with("curve/")
                assert await b.js(FOCUS_CHART_SEARCH), "no chart search box"
                await b.call("Input.insertText", text="test_accuracy_mean")
                chart = await b.text_with(*(f"{parent.info.run_name} ({k})" for k in curve_keys))
                await b.js(CLOSE_ASSISTANT)
                await asyncio.sleep(1)
                await b.screenshot(shots / "mlflow_chart.png")
                return runs, chart

        runs, chart = asyncio.run(look())
        print(f"\nrendered runs view: parent {parent.info.run_name!r}, children {names}; chart view: {curve_keys}")
        # the runs view: every run by name, with its Source and Dataset filled in
        assert runs.count("glth") >= 5  # the Source column of all five runs
        assert f"digits ({digest})" in runs
        # the chart view: one chart per curve metric, drawn for the parent run, over the rounds
        for key in curve_keys:
            assert key in chart
        assert "Step" in chart
        for png in ("mlflow_runs.png", "mlflow_chart.png"):
            data = (shots / png).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, png
    finally:
        server.stop()
