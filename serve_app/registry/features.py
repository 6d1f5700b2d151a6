"""The demo fraud models' feature names, in signature order.

A module of its own so that light processes (the benchmark's load generator) can share
them without importing LightGBM, pandas or MLflow.
"""

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
