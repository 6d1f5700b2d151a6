"""One retrain: recent labelled traffic in, a `challenger` version out (or a refusal).

It runs as a Ray task on the cluster (serving/retrain_watch.py starts it) or in the CLI's
process, and it never touches `champion`: from the new version's registration on, the gate
and the canary decide, as for any version a person registers. The new version's evaluation
set is the newest labelled period, which becomes the model's evaluation set: champion and
challenger are gated on the same, new rows.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from serve_app.core.retrain_guards import NO_DATA, TOO_FEW_ROWS, judge_training_set
from serve_app.core.stats import roc_auc
from serve_app.labels.store import LabelStore
from serve_app.predictions.records import SECONDS_PER_DAY
from serve_app.registry.features import LABEL_COLUMN
from serve_app.registry.mlflow_registry import CHALLENGER, CHAMPION, Registry, calibration_tags
from serve_app.registry.register import champion_model
from serve_app.retraining.dataset import TrainingSet, parquet_rows, training_set
from serve_app.runtime.convert import convert_checked
from serve_app.runtime.evaluation import calibrate, reference_profile
from serve_app.runtime.onnx import ModelArtifact, OnnxModel
from serve_app.runtime.training import TRAIN_PARAMS_TAG, params_from_tag, params_tag, train_booster
from serve_app.settings import AppSettings

# Lineage: where a retrained version came from, as version tags.
PARENT_TAG = "serve_app.parent_version"
TRIGGER_TAG = "serve_app.trigger"  # drift | quality | manual
TRIGGER_DETAIL_TAG = "serve_app.trigger_detail"  # the readings that started it
DATA_WINDOW_TAG = "serve_app.data_window"  # ISO start/end of the labelled rows used
TRAINING_ROWS_TAG = "serve_app.training_rows"  # train / holdout rows, frauds in each
TAG_LIMIT = 5_000  # MLflow holds 8,000 characters per tag value


@dataclass(frozen=True)
class Outcome:
    outcome: str  # registered | refused | failed
    model: str
    detail: str
    reason: str | None = None  # a refusal's code (core/retrain_guards.py)
    version: int | None = None
    parent: int | None = None
    figures: dict[str, float | int | str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def retrain(
    settings: AppSettings, name: str, trigger: str, detail: str, onset: float | None = None
) -> Outcome:
    """Build the training set, check it, train, convert, calibrate, register.

    `onset`: when the drift began (the first breaching window's start). The guards then
    count only the labelled rows since: a retrain meant to learn the new traffic needs
    labels of it, and labels come late, so it is refused (and retried) until enough have
    matured. Training uses the whole data window; the holdout is its newest rows."""
    started = time.time()
    policy = settings.retrain
    registry = Registry(settings.registry.tracking_uri or "")
    info = registry.sweep(f"name = '{name}'").get(name)
    if info is None or CHAMPION not in info.aliases:
        return Outcome("refused", name, "the model has no champion to retrain", NO_DATA)
    parent = info.aliases[CHAMPION]
    fetched = registry.fetch(name, parent)
    features = fetched.artifact.features
    since = started - policy.data_window_days * SECONDS_PER_DAY
    until = started - policy.label_maturity_s
    log = settings.prediction_log
    if log.sink == "kafka":
        from serve_app.retraining.kafka_rows import kafka_rows

        rows = kafka_rows(log.kafka, name, features, since, until)
    else:
        log_dir = Path(log.directory or Path(settings.home) / "predictions")
        rows = parquet_rows(log_dir, name, features, since, until)
    store = LabelStore(settings.labels.database_uri or "", settings.labels.retention_days)
    found = training_set(rows, store, name, features)
    recent = found if onset is None else found.since(onset)
    refusal = judge_training_set(
        policy, features, recent.rows, recent.labels, _reference_label_rate(registry, name)
    )
    if refusal is not None and onset is not None:
        refusal = replace(refusal, detail=f"{refusal.detail} since the drift began")
    if refusal is not None and log.sink == "parquet" and refusal.reason in (NO_DATA, TOO_FEW_ROWS):
        wait = f"rows of the last {log.file_max_age_s:g} s are in Parquet files still open"
        refusal = replace(refusal, detail=f"{refusal.detail} ({wait}: file_max_age_s)")
    if refusal is not None:
        return Outcome("refused", name, refusal.detail, refusal.reason, parent=parent)
    train, holdout = found.split(policy.holdout_fraction, onset)
    if len(np.unique(holdout.labels)) < 2 or len(np.unique(train.labels)) < 2:
        return Outcome(
            "refused", name, "train or holdout has one class only", NO_DATA, parent=parent
        )
    tags = registry.version_tags(name, parent)
    params = params_from_tag(tags.get(TRAIN_PARAMS_TAG))
    booster = train_booster(train.frame(), train.labels, params=params)
    onnx_bytes = convert_checked(booster, holdout.rows[:256])
    model = OnnxModel(ModelArtifact(name, 0, onnx_bytes, features))
    champion = champion_model(registry, name, features)
    calibration = calibrate(model, holdout.rows, holdout.labels, champion)
    auc = roc_auc(holdout.labels, model.predict(holdout.rows))
    lineage = {
        "origin": f"serve-app retrain ({trigger})",
        PARENT_TAG: str(parent),
        TRIGGER_TAG: trigger,
        TRIGGER_DETAIL_TAG: detail[:TAG_LIMIT],
        DATA_WINDOW_TAG: "/".join(_iso(t) for t in found.window),
        TRAINING_ROWS_TAG: json.dumps(_sizes(train, holdout)),
        TRAIN_PARAMS_TAG: params_tag(params),
        "eval_auc": f"{auc:.4f}",
    }
    version = registry.register(
        name,
        onnx_bytes,
        features,
        holdout.rows[:3],
        alias=CHALLENGER,
        eval_set=holdout.frame().assign(**{LABEL_COLUMN: holdout.labels}),
        metrics={"eval_auc": auc, "positive_rate": float(train.labels.mean())},
        tags=lineage
        | calibration_tags(
            calibration.threshold, calibration.recall, calibration.false_positive_rate
        ),
        profile=reference_profile(model, holdout.rows, calibration.threshold),
        booster_text=booster.model_to_string(),
    )
    figures = {**_sizes(train, holdout), "eval_auc": round(auc, 4)}
    figures["seconds"] = round(time.time() - started, 1)
    return Outcome("registered", name, f"v{version} registered as @{CHALLENGER}", None, version,
                   parent, figures)  # fmt: skip


def _reference_label_rate(registry: Registry, name: str) -> float | None:
    """The fraud rate of the model's current evaluation set (the serving version's)."""
    found = registry.eval_set(name)
    return None if found is None else float(np.mean(found[1] == 1))


def _sizes(train: TrainingSet, holdout: TrainingSet) -> dict[str, int]:
    return {
        "train_rows": len(train),
        "train_frauds": int(train.labels.sum()),
        "holdout_rows": len(holdout),
        "holdout_frauds": int(holdout.labels.sum()),
    }


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")
