"""Demo fraud models: LightGBM classifiers trained here on synthetic transactions.

One model per product and region (`fraud-card-eu`, ...), each with its own fraud
pattern, so the registry looks like a payments company's: dozens of small, similar,
separately versioned models. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from serve_app.core.placement import POOL_TAG
from serve_app.core.stats import roc_auc
from serve_app.registry.features import FEATURES, LABEL_COLUMN
from serve_app.registry.mlflow_registry import CHAMPION, Registry, calibration_tags
from serve_app.registry.register import champion_model
from serve_app.runtime.convert import convert_checked
from serve_app.runtime.evaluation import calibrate, reference_profile
from serve_app.runtime.onnx import ModelArtifact, OnnxModel
from serve_app.runtime.training import DEFAULT_PARAMS, TRAIN_PARAMS_TAG, params_tag, train_booster

PRODUCTS = ("card", "transfer", "wallet", "p2p", "ecommerce", "atm", "ach", "crypto", "loan")
REGIONS = ("eu", "us", "uk", "apac", "latam", "mena")
DEMO_MODELS = tuple(f"fraud-{p}-{r}" for p in PRODUCTS for r in REGIONS)
TRAIN_ROWS = 6_000
EVAL_ROWS = 4_000
FRAUD_RATE = 0.04
# Demo models served by a model pool rather than the fast lane: the pool that
# configs/serve_config.yaml declares, with an onnxruntime other than the router's.
DEMO_POOL = "onnxruntime-1-20"
POOLED_DEMO_MODELS = ("fraud-loan-mena",)


def demo_names(count: int) -> list[str]:
    """`count` model names: the demo models, then numbered variants (`fraud-card-eu-01`, ...)."""
    numbered = (f"{name}-{n:02d}" for n in range(1, 100) for name in DEMO_MODELS)
    return list(itertools.islice(itertools.chain(DEMO_MODELS, numbered), count))


def _rng(name: str, salt: str = "") -> np.random.Generator:
    return np.random.default_rng(
        int.from_bytes(hashlib.sha256((name + salt).encode()).digest()[:8])
    )


def synthetic_transactions(name: str, rows: int, salt: str = "") -> tuple[pd.DataFrame, np.ndarray]:
    """Transactions and fraud labels; the pattern's weights depend on the model's name."""
    rng = _rng(name, salt)
    pattern = _rng(name, "pattern").normal(1.0, 0.35, size=8)
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(3.5, 1.2, rows),
            "hour": rng.integers(0, 24, rows).astype(float),
            "merchant_risk": rng.beta(2, 8, rows),
            "txn_count_1h": rng.poisson(1.2, rows).astype(float),
            "txn_count_24h": rng.poisson(6, rows).astype(float),
            "avg_amount_30d": rng.lognormal(3.5, 0.8, rows),
            "account_age_days": rng.exponential(700, rows),
            "distance_from_home_km": rng.exponential(30, rows),
            "is_foreign": (rng.random(rows) < 0.1).astype(float),
            "card_present": (rng.random(rows) < 0.6).astype(float),
            "device_risk": rng.beta(1.5, 10, rows),
            "velocity_ratio": rng.gamma(2, 0.5, rows),
        }
    )
    night = ((frame["hour"] < 5) | (frame["hour"] > 22)).astype(float)
    signal = 1.6 * (
        pattern[0] * 1.6 * np.log1p(frame["amount"] / frame["avg_amount_30d"])
        + pattern[1] * 4.0 * frame["merchant_risk"]
        + pattern[2] * 0.45 * frame["txn_count_1h"]
        + pattern[3] * 1.1 * night
        + pattern[4] * 1.2 * frame["is_foreign"] * (1 - frame["card_present"])
        + pattern[5] * 5.0 * frame["device_risk"]
        + pattern[6] * 0.5 * frame["velocity_ratio"]
        - pattern[7] * 0.6 * np.log1p(frame["account_age_days"] / 365)
    )
    logit = signal + _intercept_for_rate(signal.to_numpy(), FRAUD_RATE)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame.astype(np.float32), labels


def _intercept_for_rate(signal: np.ndarray, rate: float) -> float:
    """The intercept that makes `rate` of transactions fraudulent on average (bisection)."""
    low, high = -30.0, 10.0
    for _ in range(50):
        middle = (low + high) / 2
        if np.mean(1 / (1 + np.exp(-(signal + middle)))) > rate:
            high = middle
        else:
            low = middle
    return (low + high) / 2


def seed_model(registry: Registry, name: str, alias: str | None = CHAMPION, salt: str = "") -> int:
    """Train, convert, check and register one demo model; returns the new version."""
    train, train_labels = synthetic_transactions(name, TRAIN_ROWS, salt + "train")
    held_out, eval_labels = synthetic_transactions(name, EVAL_ROWS, salt + "eval")
    booster = train_booster(train, train_labels)
    onnx_bytes = convert_checked(booster, held_out.to_numpy()[:256])
    auc = roc_auc(eval_labels, booster.predict(held_out, num_threads=1))
    eval_set = held_out.assign(**{LABEL_COLUMN: eval_labels})
    model = OnnxModel(ModelArtifact(name, 0, onnx_bytes, FEATURES))
    champion = champion_model(registry, name, FEATURES)
    found = calibrate(model, held_out.to_numpy(), eval_labels, champion)
    return registry.register(
        name,
        onnx_bytes,
        FEATURES,
        held_out.to_numpy()[:3],
        alias=alias,
        eval_set=eval_set,
        metrics={"eval_auc": auc, "positive_rate": float(train_labels.mean())},
        tags={
            "eval_auc": f"{auc:.4f}",
            "origin": "serve-app demo seed",
            TRAIN_PARAMS_TAG: params_tag(DEFAULT_PARAMS),
            **calibration_tags(found.threshold, found.recall, found.false_positive_rate),
        },
        profile=reference_profile(model, held_out.to_numpy(), found.threshold),
        booster_text=booster.model_to_string(),
    )


def seed_demo_models(
    registry: Registry, count: int = len(DEMO_MODELS), progress: Callable[[str], None] = print
) -> list[str]:
    """Register the demo models the registry does not have yet."""
    existing = registry.sweep()
    names = [n for n in DEMO_MODELS[:count] if n not in existing]
    started = time.perf_counter()
    for index, name in enumerate(names, 1):
        version = seed_model(registry, name)
        if name in POOLED_DEMO_MODELS:
            registry.set_model_tag(name, POOL_TAG, DEMO_POOL)
        progress(
            f"  [{index:>2}/{len(names)}] {name} v{version} registered as @{CHAMPION} "
            f"({time.perf_counter() - started:.1f} s)"
        )
    return names
