"""COCO, CUHK-SYSU, CityPersons and CrowdHuman in one mix: prepare on the demo data in the real layouts, a short
training sampling all four by source_weights, and the report's dataset table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import prepare_fixtures as fx

FOUR = ("coco", "cuhk", "citypersons", "crowdhuman")
WEIGHTS = {"coco": 1.0, "cuhk": 1.0, "citypersons": 2.0, "crowdhuman": 4.0}


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("PERSONDET_DEMO_HOME", str(tmp_path / "demo"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)  # the default artifact store ./mlruns lands in tmp_path
    import mlflow
    import torch

    torch.set_num_threads(1)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    yield mlflow.MlflowClient()
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_prepare_train_and_report_on_four_sources(tmp_path, tracking):
    from persondet.config import PrepareConfig, ReportConfig, TrainConfig
    from persondet.data import PersonDataset, load_prepared, make_loader
    from persondet.prepare import prepare
    from persondet.report import report
    from persondet.synth import ensure_demo_data
    from persondet.training import launch

    # empty roots: the demo copies; CityPersons and CrowdHuman are generated only now that a mix names them
    assert not (tmp_path / "demo").exists()
    result = prepare(PrepareConfig(mix="crowdhuman+citypersons+cuhk+coco", check_images=1))
    demo = ensure_demo_data(0)
    assert demo.citypersons_root is not None and demo.crowdhuman_root is not None
    expected = fx.independent_counts({name: getattr(demo, f"{name}_root") for name in FOUR})
    for name in FOUR:
        assert result.stats[name]["images"] == expected[name]["images"] > 0
        assert result.stats[name]["objects"] == expected[name]["objects"]
        assert result.stats[name]["ignore_regions"] == expected[name]["ignore_regions"]

    # the sampler draws every source in the ratio asked for (by images, whatever each source's size)
    dataset, path = load_prepared(result.run_id)
    assert dataset["persondet"]["mix"] == "+".join(FOUR)
    ds = PersonDataset(dataset, path.parent)
    assert Counter(ds.sources) == {name: expected[name]["images"] for name in FOUR}
    loader = make_loader(ds, 2, source_weights=WEIGHTS, seed=1)
    drawn = Counter()
    for epoch in range(12):
        loader.batch_sampler.sampler.set_epoch(epoch)
        drawn.update(ds.sources[i] for i in loader.batch_sampler.sampler)
    total = sum(drawn.values())
    for name, weight in WEIGHTS.items():
        assert drawn[name] / total == pytest.approx(weight / sum(WEIGHTS.values()), abs=0.03), drawn

    # a short training on the prepare run, sampling the four sources
    weights = ",".join(f"{k}={v:g}" for k, v in WEIGHTS.items())
    metrics = launch(TrainConfig.from_strings({
        "data": result.run_id, "epochs": "1", "max_iters_per_epoch": "3", "batch_size": "2", "workers": "0",
        "min_size": "96", "max_size": "160", "source_weights": weights, "register": "false"}))
    assert metrics["train_time_s"] > 0
    (train,) = tracking.search_runs([tracking.get_experiment_by_name("persondet").experiment_id],
                                    "tags.`persondet.entry_point` = 'train'")
    assert train.info.status == "FINISHED"
    assert train.data.params["dataset_mix"] == "+".join(FOUR) and train.data.params["source_weights"] == weights
    assert len(tracking.get_metric_history(train.info.run_id, "loss")) == 3

    # the report's dataset table: a row per source and one for the mix
    table = report(ReportConfig(examples=0, output_dir=str(tmp_path / "report")))["stats"]
    rows = {row[0]: row[1:] for row in table[1:]}
    assert list(rows) == ["coco", "cuhk (all)", "citypersons", "crowdhuman", "+".join(FOUR)]
    for name, label in zip(FOUR, rows):
        assert rows[label][:2] == [str(expected[name]["images"]), str(expected[name]["objects"])]
    assert rows["+".join(FOUR)][1] == str(sum(expected[name]["objects"] for name in FOUR))
    assert "crowdhuman" in Path(tmp_path / "report" / "report.html").read_text()
