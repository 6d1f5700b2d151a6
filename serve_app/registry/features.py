"""The demo fraud models' feature names, in signature order, and the evaluation sets' label.

A module of its own so that light processes (the benchmark's load generator) and the
evaluation code can share them without importing LightGBM, pandas or MLflow.
"""

LABEL_COLUMN = "is_fraud"  # the column of an evaluation set that holds 0/1 labels

FEATURES = (
    "amount",
    "hour",
    "merchant_risk",
    "txn_count_1h",
    "txn_count_24h",
    "avg_amount_30d",
    "account_age_days",
    "distance_from_home_km",
    "is_foreign",
    "card_present",
    "device_risk",
    "velocity_ratio",
)
