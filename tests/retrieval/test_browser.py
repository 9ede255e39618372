"""The page in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium): upload a query,
wait for the grid, check its k results, pick a gallery image, and save screenshots to tests/artifacts/browser/
(git-ignored; UNSEEN_TEST_ARTIFACTS=DIR puts them elsewhere).

`make test` installs chromium and chromium-driver with apt-get when they are missing; without them this test fails
and says what to install (a skipped browser test would let a broken page pass).
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from unseen.retrieval.index import build_index
from unseen.retrieval.search import Searcher
from unseen.retrieval.server import create_app
from unseen.retrieval.sources import list_items

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("UNSEEN_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))


def require_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        pytest.fail(f"no {', '.join(missing)}: `make test` installs them (apt-get install chromium chromium-driver)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path, embedder, gallery):
    """The app on a free loopback port, in a thread; yields its URL."""
    import uvicorn

    build_index(embedder, list_items(gallery), tmp_path / "index", log=lambda _: None)
    port = free_port()
    config = uvicorn.Config(create_app(Searcher.open(tmp_path / "index")), host="127.0.0.1", port=port,
                            log_level="warning")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uvicorn_server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uvicorn_server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path):
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_upload_a_query_and_see_the_top_k_grid(server, browser, gallery):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server)
    wait.until(lambda driver: "24 images" in driver.find_element(By.ID, "index-info").text)
    wait.until(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#gallery img")) == 24)
    assert browser.find_element(By.ID, "k").get_attribute("value") == "10"

    query = gallery / "g02" / "4.png"
    browser.find_element(By.ID, "query-file").send_keys(str(query))
    wait.until(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#results .result")) == 10)
    wait.until(lambda driver: driver.execute_script(
        "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser-upload.png"))
    assert "4.png" in browser.find_element(By.ID, "status").text
    assert "error" not in browser.find_element(By.ID, "status").get_attribute("class")
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .result")
    similarities = [float(card.find_element(By.CSS_SELECTOR, ".similarity").text) for card in cards]
    assert similarities == sorted(similarities, reverse=True) and similarities[0] == pytest.approx(1.0, abs=1e-3)
    assert cards[0].find_element(By.CSS_SELECTOR, ".label").text == "g02"
    assert [card.find_element(By.CSS_SELECTOR, ".rank").text for card in cards] == [f"#{i}" for i in range(1, 11)]

    browser.find_element(By.ID, "k").clear()
    browser.find_element(By.ID, "k").send_keys("5")
    browser.find_elements(By.CSS_SELECTOR, "#gallery img")[0].click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "summary"), "share the query's label"))
    wait.until(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#results .result")) == 5)
    marked = browser.find_elements(By.CSS_SELECTOR, "#results .result.same, #results .result.other")
    assert len(marked) == 5
    browser.save_screenshot(str(ARTIFACTS / "browser-pick.png"))

    not_an_image = gallery / "g00" / "text.png"
    browser.find_element(By.ID, "query-file").send_keys(str(not_an_image))
    wait.until(lambda driver: "error" in driver.find_element(By.ID, "status").get_attribute("class"))
    assert "not an image file" in browser.find_element(By.ID, "status").text
    assert (ARTIFACTS / "browser-upload.png").stat().st_size > 10_000
