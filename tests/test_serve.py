"""``serve``: a real uvicorn process on a free loopback port, driven over real HTTP, and its
upload page driven by a real headless Chromium."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from helpers import SAMPLES, truncated_jpeg
from trained_model import CLASSES, held_out_photos, trained_run
from transferlab.serve import Batcher

MAX_UPLOAD_MB = 1
MAX_MEGAPIXELS = 4
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(server: Server, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"server exited with {server.proc.returncode}:\n{server.log.read_text()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"server did not answer /health in {timeout:.0f}s:\n{server.log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    run = trained_run(tmp_path_factory)
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    args = [
        sys.executable, "-m", "transferlab", "serve", str(run), "--port", str(port),
        "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-pixels", str(MAX_MEGAPIXELS),
        "--max-batch", "4", "--batch-window-ms", "5",
    ]  # fmt: skip
    with log.open("w") as fh:
        proc = subprocess.Popen(
            args, stdout=fh, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
    srv = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait_until_up(srv)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()


def _row_sums(batch: np.ndarray) -> torch.Tensor:
    """A stand-in model: one number per image, so answers can be matched to requests."""
    return torch.from_numpy(batch.reshape(len(batch), -1).sum(axis=1, keepdims=True))


async def _submit_together(batcher: Batcher, images: list[np.ndarray]) -> list[np.ndarray]:
    worker = asyncio.create_task(batcher.serve_forever())
    try:
        async with asyncio.timeout(5):  # a batcher that died leaves the requests waiting
            return list(await asyncio.gather(*(batcher.submit(x) for x in images)))
    finally:
        worker.cancel()


def test_requests_waiting_together_are_classified_in_one_batch() -> None:
    batcher = Batcher(_row_sums, max_batch=4, window_s=0.05)
    images = [np.full((3, 2, 2), i, dtype=np.uint8) for i in range(3)]
    answers = asyncio.run(_submit_together(batcher, images))
    assert [float(a[0]) for a in answers] == [0.0, 12.0, 24.0]
    assert (batcher.batches, batcher.images) == (1, 3)


def test_batcher_survives_the_timeout_of_python_3_10(monkeypatch: pytest.MonkeyPatch) -> None:
    # On Python 3.10 asyncio.wait_for raises asyncio.TimeoutError, a class of its own (the
    # built-in TimeoutError only from 3.11): emulate that contract. A batcher catching only
    # the built-in let it escape, died, and every later request waited for good.
    class LegacyTimeoutError(Exception):
        pass

    wait_for = asyncio.wait_for

    async def wait_for_310(awaitable: object, timeout: float | None) -> object:
        try:
            return await wait_for(awaitable, timeout)  # type: ignore[arg-type]
        except TimeoutError:
            raise LegacyTimeoutError from None

    monkeypatch.setattr(asyncio, "wait_for", wait_for_310)
    monkeypatch.setattr(asyncio, "TimeoutError", LegacyTimeoutError)
    batcher = Batcher(_row_sums, max_batch=4, window_s=0.01)
    first = asyncio.run(_submit_together(batcher, [np.ones((3, 2, 2), dtype=np.uint8)]))
    assert float(first[0][0]) == 12.0  # a batch of one, after the window timed out
    assert batcher.batches == 1


def _post_file(server: Server, path: Path, **params: object) -> httpx.Response:
    with path.open("rb") as fh:
        return httpx.post(
            f"{server.url}/predict", files={"file": (path.name, fh)}, params=params, timeout=60
        )


def test_good_image_gets_its_label_and_sorted_probabilities(server: Server) -> None:
    for label in CLASSES:
        r = _post_file(server, held_out_photos(label, 1)[0], top_k=2)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["label"] == label
        assert body["top_k"][0]["label"] == label and len(body["top_k"]) == 2
        probs = [t["probability"] for t in body["top_k"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6


def test_raw_body_gives_the_same_answer_as_multipart(server: Server) -> None:
    photo = SAMPLES / "capitol-dome.jpg"
    raw = httpx.post(
        f"{server.url}/predict", content=photo.read_bytes(),
        headers={"content-type": "image/jpeg"}, timeout=60,
    )  # fmt: skip
    multipart = _post_file(server, photo)
    assert raw.status_code == multipart.status_code == 200
    assert raw.json()["top_k"] == multipart.json()["top_k"]
    assert len(raw.json()["top_k"]) == len(CLASSES)  # default top_k 5, capped at the classes


def test_corrupt_image_is_422_with_a_message(server: Server, tmp_path: Path) -> None:
    r = _post_file(server, truncated_jpeg(tmp_path / "cut.jpg"))
    assert r.status_code == 422
    assert "corrupt or truncated" in r.json()["detail"]


def test_text_file_is_415_with_a_message(server: Server, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("just some words, not a picture\n")
    r = _post_file(server, notes)
    assert r.status_code == 415
    assert r.json()["detail"].startswith("not an image file")
    empty = httpx.post(f"{server.url}/predict", content=b"", timeout=30)
    assert empty.status_code == 422 and "empty upload" in empty.json()["detail"]


def test_oversized_upload_is_413_declared_or_streamed(server: Server, tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    big.write_bytes(os.urandom(int(1.5 * MAX_UPLOAD_MB * 1024 * 1024)))
    r = _post_file(server, big)
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count
        for _ in range(24):
            yield b"\0" * 65536

    streamed = httpx.post(f"{server.url}/predict", content=chunks(), timeout=60)
    assert streamed.status_code == 413


def test_decompression_bomb_is_refused_before_decoding(server: Server) -> None:
    buf = io.BytesIO()
    Image.new("L", (3000, 2000)).save(buf, format="PNG")  # 6 MP in a few kB
    assert len(buf.getvalue()) < 100_000
    r = httpx.post(f"{server.url}/predict", content=buf.getvalue(), timeout=30)
    assert r.status_code == 413 and "megapixels" in r.json()["detail"]


def test_bad_top_k_is_a_validation_error(server: Server) -> None:
    r = _post_file(server, held_out_photos("altar", 1)[0], top_k=0)
    assert r.status_code == 422


def test_concurrent_requests_all_answer_consistently(server: Server) -> None:
    photos = [held_out_photos(label, 1)[0] for label in CLASSES] * 8  # 24 requests
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda p: _post_file(server, p, top_k=3), photos))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    by_photo: dict[Path, list[list[float]]] = {}
    for photo, r in zip(photos, responses, strict=True):
        assert r.json()["label"] == photo.parent.name
        by_photo.setdefault(photo, []).append([t["probability"] for t in r.json()["top_k"]])
    for answers in by_photo.values():  # batched or alone, the same numbers
        assert all(a == pytest.approx(answers[0], abs=1e-4) for a in answers)
    served = httpx.get(f"{server.url}/model", timeout=10).json()["served"]
    assert served["batches"] < served["images"]  # micro-batching really grouped requests


def test_model_health_docs_and_page(server: Server) -> None:
    model = httpx.get(f"{server.url}/model", timeout=10).json()
    assert model["class_names"] == list(CLASSES)
    assert model["architecture"] == "tf_efficientnet_lite0"
    assert "accuracy" in model["metrics"]
    assert model["limits"]["max_upload_bytes"] == MAX_UPLOAD_MB * 1024 * 1024
    assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    assert "multipart/form-data" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert httpx.get(f"{server.url}/docs", timeout=10).status_code == 200
    page = httpx.get(f"{server.url}/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    assert "<script src" not in page.text and "<link" not in page.text


@pytest.mark.slow
def test_upload_page_in_headless_chromium_shows_the_top_label(server: Server) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "run scripts/system-deps.sh"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="transferlab-chromium-")
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 90)
        wait.until(lambda d: "classes" in d.find_element(By.ID, "model").text)
        for label in ("stained_glass", "dome(outer)"):
            photo = held_out_photos(label, 1)[0]
            driver.find_element(By.ID, "file").send_keys(str(photo))
            wait.until(lambda d, want=label: d.find_element(By.ID, "top-label").text == want)
            bars = driver.find_elements(By.CSS_SELECTOR, "#rows .row")
            assert len(bars) == len(CLASSES)
            widths = [b.find_element(By.CLASS_NAME, "fill").size["width"] for b in bars]
            assert widths == sorted(widths, reverse=True) and widths[0] > 0
            assert driver.find_element(By.ID, "preview").get_attribute("src").startswith("blob:")
        assert driver.find_element(By.ID, "error").text == ""
    finally:
        driver.quit()
