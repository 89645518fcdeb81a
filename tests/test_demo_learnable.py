"""The demo data is learnable: the small model, trained for about a minute of CPU, finds the demo people.

The numbers behind the settings are in docs/TRAINING.md (59 s of training, in-house AP50 0.999 on an idle
2-core machine). The threshold leaves room for a slower or busier machine, not for a model that learned nothing:
an untrained detector scores AP50 below 0.01 here.
"""

import pytest

from persondet.config import EvaluateConfig, PrepareConfig, TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)


def test_small_model_learns_the_demo_people_in_about_a_minute(tracking):
    import mlflow

    from persondet.evaluation import evaluate
    from persondet.prepare import prepare
    from persondet.training import train

    prepared = prepare(PrepareConfig(mix="coco+cuhk", check_images=0))
    assert prepared.stats["merged"]["images"] == 340  # the demo's default size, which the timing assumes
    metrics = train(TrainConfig.from_strings({
        "data": prepared.run_id, "model": "small", "batch_size": "2", "epochs": "1", "lr": "0.02",
        "warmup_iters": "20", "min_size": "256", "max_size": "341", "workers": "0", "register": "false"}))
    training_run = mlflow.last_active_run().info.run_id
    result = evaluate(EvaluateConfig(model_uri=f"runs:/{training_run}/model"))  # the demo in-house set
    print(f"train_time_s={metrics.get('train_time_s')} AP50={result['metrics']['AP50']:.4f}")
    assert result["metrics"]["AP50"] >= 0.5
