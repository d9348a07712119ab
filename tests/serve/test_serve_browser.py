"""End to end in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
a person uploads an image and sees the result grid; labels that look like HTML stay text.

Skips, saying why, where the browser or its driver is not installed (`.ci/run` installs them where
apt can). Set NEURALCODES_SCREENSHOT=path.png to keep a screenshot of the page with its results.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from neuralcodes.index import Index
from neuralcodes.serve import create_app

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "/usr/lib/chromium/chromedriver")


def _find(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if os.path.isfile(name) else None)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')"
    )
    binary, driver = _find(BROWSERS), _find(DRIVERS)
    if binary is None or driver is None:
        pytest.skip(
            "no headless browser here: install Debian's chromium and chromium-driver "
            "(apt-get install -y chromium chromium-driver), as .ci/run does where apt is available"
        )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1100,1000",
    ):
        options.add_argument(argument)
    os.environ.setdefault(
        "SE_OFFLINE", "true"
    )  # Selenium Manager must not try to download anything
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.set_page_load_timeout(60)
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def server(served_index: Path):
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Index.open(served_index) as index:
        app = create_app(index, allowed_hosts=["127.0.0.1", "localhost"])
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), (
                "the test server did not start"
            )
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        thread.join(timeout=10)


def _wait(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "the page did not get there in time"
        time.sleep(0.1)


def test_upload_an_image_and_see_the_result_grid(
    browser, server: str, served_photos: Path, evil_label: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    collection = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#collection figure"))
    assert len(collection) == 12

    query = sorted((served_photos / evil_label).glob("*.JPEG"))[2]
    browser.find_element(By.ID, "file").send_keys(str(query))
    results = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#results figure"))
    assert len(results) == 12  # k = 12 by default; the whole collection here
    first = results[0].find_element(By.TAG_NAME, "figcaption").text.splitlines()
    assert first == [evil_label, "d = 0.000", f"{evil_label}/{query.name}"]
    assert browser.find_element(By.ID, "results-title").text == f"Nearest to {query.name}"
    # The label was shown as text: no element was made of it and its handler never ran.
    assert browser.find_elements(By.CSS_SELECTOR, 'img[src="x"]') == []
    assert browser.execute_script("return window.pwned === undefined")
    thumbnails = [f.find_element(By.TAG_NAME, "img") for f in results]
    assert _wait(
        lambda: all(
            browser.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth > 0", t
            )
            for t in thumbnails
        )
    )
    if os.environ.get("NEURALCODES_SCREENSHOT"):
        Path(os.environ["NEURALCODES_SCREENSHOT"]).write_bytes(browser.get_screenshot_as_png())

    # Clicking an image of the collection searches with it.
    other = browser.find_elements(By.CSS_SELECTOR, "#collection figure")[0]
    path = other.find_element(By.CLASS_NAME, "path").text
    other.find_element(By.TAG_NAME, "img").click()
    _wait(lambda: browser.find_element(By.ID, "results-title").text == f"Nearest to {path}")
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#results figure .path")[0].text == path)

    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    browser.find_element(By.ID, "file").send_keys(str(text))
    status = browser.find_element(By.ID, "status")
    _wait(lambda: status.text.startswith("Error 415"))
    assert "not an image" in status.text and "error" in status.get_attribute("class")
