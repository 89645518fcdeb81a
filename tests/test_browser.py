"""A real browser on the MLflow UI of the test tracking server: headless Chromium (with basic-auth
credentials) shows the comparison of training runs with gpu_type, batch_size, dataset_mix, train_time_s
and AP50.  The screenshot is kept under $PERSONDET_TEST_ARTIFACTS (else the test's tmp dir)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1600,1000"]
RUNS = [  # what three training runs of the study log (the product's contract names)
    {"gpu_type": "NVIDIA V100-SXM2-16GB", "gpu_count": "4", "batch_size": "8", "dataset_mix": "coco",
     "train_time_s": 32400.0, "AP50": 0.712},
    {"gpu_type": "NVIDIA A100-SXM4-40GB", "gpu_count": "8", "batch_size": "8", "dataset_mix": "coco+cuhk",
     "train_time_s": 12600.0, "AP50": 0.741},
    {"gpu_type": "NVIDIA A100-SXM4-40GB", "gpu_count": "8", "batch_size": "16", "dataset_mix": "coco+cuhk",
     "train_time_s": 11900.0, "AP50": 0.733},
]


def _binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless Chromium or chromedriver not installed (Debian packages chromium, chromium-driver; "
                    "scripts/system-deps.sh installs them)")
    return chromium, driver


@pytest.fixture
def browser(tmp_path):
    chromium, driver_path = _binaries()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _artifacts_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("PERSONDET_TEST_ARTIFACTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _wait_for_text(driver, texts, timeout_s: float = 90) -> str:
    deadline = time.monotonic() + timeout_s
    body = ""
    while time.monotonic() < deadline:
        try:
            body = driver.find_element("tag name", "body").text
        except Exception:  # noqa: BLE001 - the React app is still replacing the document
            body = ""
        if all(text in body for text in texts):
            return body
        time.sleep(0.5)
    missing = [text for text in texts if text not in body]
    raise AssertionError(f"the page never showed {missing}; it shows:\n{body[:3000]}")


def test_mlflow_ui_compares_training_runs_by_gpu_batch_size_mix_time_and_ap50(tracking_server, browser,
                                                                              monkeypatch, tmp_path):
    from mlflow import MlflowClient

    for name, value in tracking_server.client_env().items():
        monkeypatch.setenv(name, value)
    client = MlflowClient(tracking_uri=tracking_server.uri)
    experiment_id = client.create_experiment(f"ui-compare-{uuid.uuid4().hex[:6]}")
    run_ids = []
    for i, values in enumerate(RUNS):
        run = client.create_run(experiment_id, run_name=f"train-{values['dataset_mix']}-bs{values['batch_size']}-{i}",
                                tags={"persondet.entry_point": "train"})
        for key in ("gpu_type", "gpu_count", "batch_size", "dataset_mix"):
            client.log_param(run.info.run_id, key, values[key])
        client.log_metric(run.info.run_id, "train_time_s", values["train_time_s"])
        client.log_metric(run.info.run_id, "AP50", values["AP50"])
        client.set_terminated(run.info.run_id)
        run_ids.append(run.info.run_id)

    # Basic auth for every request the page makes (document, scripts, the app's API calls).
    token = base64.b64encode(f"{tracking_server.username}:{tracking_server.password}".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])})
    browser.get(f"{tracking_server.uri}/#/compare-runs?{query}")

    body = _wait_for_text(browser, ["gpu_type", "batch_size", "dataset_mix", "train_time_s", "AP50",
                                    "NVIDIA A100-SXM4-40GB", "NVIDIA V100-SXM2-16GB", "coco+cuhk"])
    # Scroll the run-details table (its gpu_type row) into view: that is what the screenshot keeps.
    row = browser.find_element("xpath", "//*[normalize-space(text())='gpu_type']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", row)
    time.sleep(1)
    screenshot = _artifacts_dir(tmp_path) / "mlflow-ui-compare-runs.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    print(f"screenshot of the MLflow run comparison: {screenshot}")

    for values in RUNS:  # each run's values are on the page
        assert f"{values['AP50']}" in body and values["gpu_type"] in body
    assert "0.741" in body and "12600" in body.replace(",", "")
    assert "Unauthorized" not in body
