"""What a person sees after a study, in a real browser: headless Chromium (with basic-auth credentials) on
the MLflow UI of the test tracking server opens the experiment on its runs table (the run names say what
each run is), the compare-runs link a study prints (gpu_type, batch_size, dataset_mix, train_time_s and
<test>/AP50 of the six trainings), and the report's page (its tables and images render).  The screenshots
are kept under $PERSONDET_TEST_ARTIFACTS (else the test's tmp dir); the test prints their paths."""

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
# what the six training runs of a study log (the product's contract names): 3 mixes x 2 batch sizes
RUNS = [{"gpu_type": gpu, "gpu_count": count, "batch_size": batch, "dataset_mix": mix, "train_time_s": time_s,
         "time_per_iter_s": time_s / 1000, "AP50": ap50}
        for gpu, count, batch, mix, time_s, ap50 in (
            ("NVIDIA V100-SXM2-16GB", 4, 8, "coco", 32400.0, 0.712),
            ("NVIDIA V100-SXM2-16GB", 4, 16, "coco", 30100.0, 0.705),
            ("NVIDIA A100-SXM4-40GB", 8, 8, "cuhk", 9800.0, 0.433),
            ("NVIDIA A100-SXM4-40GB", 8, 16, "cuhk", 9100.0, 0.428),
            ("NVIDIA A100-SXM4-40GB", 8, 8, "coco+cuhk", 12600.0, 0.741),
            ("NVIDIA A100-SXM4-40GB", 8, 16, "coco+cuhk", 11900.0, 0.733))]


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


def _screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = _artifacts_dir(tmp_path) / name
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    print(f"screenshot: {path}")
    return path


def _log_study(experiment: str) -> list[str]:
    """Six training runs logged the way persondet names and logs them, into ``experiment``."""
    from persondet.tracking import hardware_label, open_run, run_name

    run_ids = []
    for values in RUNS:
        name = run_name("train", mix=values["dataset_mix"], batch_size=values["batch_size"],
                        hardware=hardware_label(values["gpu_type"], values["gpu_count"]))
        with open_run("train", run_name=name) as run:
            run.log_params({k: values[k] for k in ("gpu_type", "gpu_count", "batch_size", "dataset_mix")})
            run.log_metrics({"train_time_s": values["train_time_s"], "time_per_iter_s": values["time_per_iter_s"],
                             "inhouse/AP50": values["AP50"]})
            run_ids.append(run.run_id)
    return run_ids


def test_a_person_sees_the_runs_table_the_comparison_and_the_report(tracking_server, browser, monkeypatch, tmp_path):
    from mlflow import MlflowClient

    from persondet.config import ReportConfig
    from persondet.report import report
    from persondet.summary import compare_runs_url, experiment_url

    experiment = f"study-{uuid.uuid4().hex[:6]}"
    for name, value in {**tracking_server.client_env(), "MLFLOW_EXPERIMENT_NAME": experiment}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    run_ids = _log_study(experiment)
    experiment_id = MlflowClient(tracking_uri=tracking_server.uri).get_experiment_by_name(experiment).experiment_id
    names = ["train coco b8 v100x4", "train coco b16 v100x4", "train cuhk b8 a100x8", "train cuhk b16 a100x8",
             "train coco+cuhk b8 a100x8", "train coco+cuhk b16 a100x8"]

    # Basic auth for every request the page makes (document, scripts, the app's API calls).
    token = base64.b64encode(f"{tracking_server.username}:{tracking_server.password}".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})

    # 1. the experiment's runs link a study prints opens on the training runs, not on the GenAI overview
    browser.get(experiment_url(experiment_id))
    _wait_for_text(browser, ["Run Name", *names])
    assert f"/experiments/{experiment_id}/runs" in browser.current_url, browser.current_url
    _screenshot(browser, tmp_path, "mlflow-ui-experiment-runs.png")

    # 2. the compare link a study prints: the six trainings side by side
    link = compare_runs_url(run_ids, [experiment_id])
    assert link.startswith(f"{tracking_server.uri}/#/compare-runs?")
    browser.set_window_size(2400, 1300)  # six runs' columns side by side (the table scrolls sideways)
    browser.get(link)
    body = _wait_for_text(browser, ["gpu_type", "batch_size", "dataset_mix", "train_time_s", "inhouse/AP50",
                                    "NVIDIA A100-SXM4-40GB", "NVIDIA V100-SXM2-16GB", "coco+cuhk", *names])
    row = browser.find_element("xpath", "//*[normalize-space(text())='gpu_type']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", row)
    time.sleep(1)
    _screenshot(browser, tmp_path, "mlflow-ui-compare-runs.png")
    for values in RUNS:  # each run's values are on the page
        assert f"{values['AP50']}" in body and values["gpu_type"] in body
    assert "12600" in body.replace(",", "") and "Unauthorized" not in body

    # 3. the report's page: its tables and images render, its compare link is the same comparison
    result = report(ReportConfig(experiment=experiment, output_dir=str(tmp_path / "report"), examples=0))
    browser.get((tmp_path / "report" / "report.html").as_uri())
    body = _wait_for_text(browser, ["AP50 on inhouse", "Training speed", "coco+cuhk", "0.7410", "Outcome",
                                    "Compare the 6 training runs"], timeout_s=30)
    tables = browser.find_elements("tag name", "table")
    assert len(tables) >= 3 and all(t.size["height"] > 0 for t in tables)
    images = browser.find_elements("tag name", "img")
    assert images and all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) > 0
                          for i in images)
    href = browser.find_element("id", "compare-runs").get_attribute("href")
    assert href == result["compare_url"]
    assert sorted(json.loads(urllib.parse.parse_qs(href.split("?", 1)[1])["runs"][0])) == sorted(run_ids)
    _screenshot(browser, tmp_path, "report.png")
