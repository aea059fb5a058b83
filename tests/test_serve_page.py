"""The web page in a real headless Chromium (selenium): upload a file, watch the progress bar fill, ask, wait for the
streamed answer and the per-block chart, see the evidence highlighted; a screenshot is saved in the test's folder."""

from pathlib import Path

import httpx
import pytest

from lychee_hf.serve.local_server import LocalServer
from lychee_hf.testing import save_tiny_checkpoint

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
TEXT = "Alice was born in Paris. Paris is the capital of France. " * 6 + "The secret code is 4721. " * 4
QUESTION = "What is the secret code?"


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra has it)")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Chromium is not installed: apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def test_upload_ask_and_see_the_answer_the_chart_and_the_evidence(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", max_answer_tokens=4, memory_budget=8)
    document = tmp_path / "harbor.txt"
    document.write_text(TEXT, encoding="utf-8")
    with LocalServer(tmp_path / "banks", checkpoint) as server:
        browser.get(server.url + "/")
        assert browser.title == "lychee-hf"
        browser.find_element(By.ID, "file").send_keys(str(document))
        browser.find_element(By.ID, "upload").click()
        wait = WebDriverWait(browser, 300, poll_frequency=0.2)
        wait.until(lambda b: b.find_element(By.ID, "ask").is_enabled())
        progress = browser.find_element(By.ID, "progress")
        assert progress.get_attribute("value") == progress.get_attribute("max") != "0"
        assert "ready" in browser.find_element(By.ID, "status").text
        assert browser.find_element(By.ID, "document-text").text.startswith("Alice was born in Paris.")

        browser.find_element(By.ID, "question").send_keys(QUESTION)
        browser.find_element(By.ID, "ask").click()
        wait.until(lambda b: b.find_element(By.ID, "chart").get_attribute("data-done") == "true")
        browser.save_screenshot(str(tmp_path / "page.png"))

        (listed,) = httpx.get(server.url + "/v1/documents").json()["documents"]
        expected = httpx.post(
            f"{server.url}/v1/documents/{listed['id']}/answers", json={"question": QUESTION}, timeout=60
        ).json()["answers"][0]
    assert browser.find_element(By.ID, "answer").text == expected["answer"].strip()
    bars = browser.find_elements(By.CSS_SELECTOR, "#chart rect.bar")
    assert len(bars) == listed["blocks_total"] == len(expected["trace"])
    read = [bar.get_attribute("class") for bar in bars]
    assert read == [f"bar {'read' if b['kept'] else 'skipped'}" for b in expected["trace"]]
    marks = [mark.text for mark in browser.find_elements(By.CSS_SELECTOR, "#document-text mark")]
    assert marks == [e["text"] for e in sorted(expected["evidence"], key=lambda e: e["start"])]
    assert (tmp_path / "page.png").stat().st_size > 10_000
