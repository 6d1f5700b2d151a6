"""Every metric serve-app exports, defined once.

They are `ray.serve.metrics` objects, so Ray's metrics agent exports them on the node's
metrics port next to Ray Serve's own families (Prometheus names get a `ray_` prefix).
Labels are bounded: `model` only ever takes a name from the routing table (anything
else is `UNKNOWN_MODEL`), `version` a registry version of that model, `outcome` one of
three words, `result` hit or miss.
"""

from __future__ import annotations

from collections import Counter

from ray.serve import metrics

from serve_app.core.rollout import PHASES
from serve_app.core.routing import ModelRoute

UNKNOWN_MODEL = "_unknown"
LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 3, 5, 7.5, 10, 15, 25, 50, 100, 250, 500, 1000, 2500]
LOAD_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]


def outcome(status: int) -> str:
    if status < 400:
        return "ok"
    return "client_error" if status < 500 else "server_error"


def labels_received() -> metrics.Counter:
    """Labels sent back, by model and outcome (accepted, duplicate, conflict, unknown_id,
    unknown_row, row_required, invalid): the feedback endpoint's (router) and the Kafka
    label topic's (control actor)."""
    return metrics.Counter(
        "serve_app_labels_received",
        description="Labels received by model and outcome (endpoint and Kafka topic).",
        tag_keys=("model", "status"),
    )


class BufferedCounter:
    """Counts in process; `flush` adds them to the Ray counter, one call per label set.

    A Ray metric call costs several microseconds; on the request path four of them were
    5% of a replica's samples in py-spy (benchmarks/results/profile.md).
    """

    def __init__(self, counter: metrics.Counter) -> None:
        self._counter = counter
        self._pending: Counter[tuple[tuple[str, str], ...]] = Counter()

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self._pending[tuple((tags or {}).items())] += value

    def flush(self) -> None:
        pending, self._pending = self._pending, Counter()
        for labels, value in pending.items():
            self._counter.inc(value, tags=dict(labels))


class ScoringMetrics:
    """Metrics recorded where models are scored (router replicas, pool replicas);
    per-request counters are buffered (`flush`)."""

    def __init__(self) -> None:
        self.requests = BufferedCounter(
            metrics.Counter(
                "serve_app_requests",
                description="Scoring requests by model, version and outcome.",
                tag_keys=("model", "version", "outcome"),
            )
        )
        self.latency = metrics.Histogram(
            "serve_app_request_latency_ms",
            description="Scoring latency inside the replica, decode to encode.",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("model", "version"),
        )
        self.rows = BufferedCounter(
            metrics.Counter(
                "serve_app_scored_rows",
                description="Rows scored.",
                tag_keys=("model", "version"),
            )
        )
        self.model_cache = BufferedCounter(
            metrics.Counter(
                "serve_app_model_cache_requests",
                description="Scoring requests whose model was already open in the replica "
                "(hit) or had to be loaded (miss).",
                tag_keys=("model", "result"),
            )
        )
        self.deadline_exceeded = BufferedCounter(
            metrics.Counter(
                "serve_app_deadline_exceeded",
                description="Requests answered 504: their deadline passed before scoring.",
                tag_keys=("model",),
            )
        )
        self.prediction_cache = BufferedCounter(
            metrics.Counter(
                "serve_app_prediction_cache_requests",
                description="Lookups in the prediction cache of the models that have one.",
                tag_keys=("model", "result"),
            )
        )
        # Explanations (TreeSHAP) apart from scoring: they cost far more per row.
        self.explanations = BufferedCounter(
            metrics.Counter(
                "serve_app_explanations",
                description="Explain requests by model and outcome (rate-limited ones are "
                "client_error).",
                tag_keys=("model", "outcome"),
            )
        )
        self.explain_latency = metrics.Histogram(
            "serve_app_explain_latency_ms",
            description="Explain latency inside the router, decode to encode (score included).",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("model",),
        )
        self.model_loads = metrics.Counter(
            "serve_app_model_loads",
            description="Model versions loaded into a replica.",
            tag_keys=("model",),
        )
        self.model_evictions = metrics.Counter(
            "serve_app_model_evictions",
            description="Models evicted from a replica by its LRU of open models.",
            tag_keys=("model",),
        )
        self.model_load_seconds = metrics.Histogram(
            "serve_app_model_load_seconds",
            description="Time to fetch and open a model version in a replica.",
            boundaries=LOAD_BOUNDARIES_S,
            tag_keys=("model",),
        )

        self.prediction_log_rows = metrics.Counter(
            "serve_app_prediction_log_rows",
            description="Rows the prediction log handed to a sink (parquet, kafka) and to the "
            "label store (store).",
            tag_keys=("model", "sink"),
        )
        self.labels_received = BufferedCounter(labels_received())
        self.prediction_log_dropped = metrics.Counter(
            "serve_app_prediction_log_dropped",
            description="Rows the prediction log lost, by reason (queue_full, kafka_buffer_full, "
            "kafka_delivery_failed, parquet_error, kafka_error, store_error, shutdown).",
            tag_keys=("model", "reason"),
        )

    def flush(self) -> None:
        for counter in (
            self.requests,
            self.rows,
            self.model_cache,
            self.prediction_cache,
            self.deadline_exceeded,
            self.labels_received,
            self.explanations,
        ):
            counter.flush()


class ControllerMetrics:
    """Metrics recorded by the control actor.

    Ray's metrics have no way to drop a label set, so a model that leaves the registry
    has its gauges set to 0 (`forget_model`): `serve_app_served_version` 0 means "not
    served", and no rollout phase is 1.
    """

    def __init__(self) -> None:
        self.registry_polls = metrics.Counter(
            "serve_app_registry_polls",
            description="Registry sweeps by result.",
            tag_keys=("result",),
        )
        self.last_successful_poll = metrics.Gauge(
            "serve_app_registry_last_success_timestamp_seconds",
            description="Unix time of the last successful registry sweep.",
        )
        self.load_failures = metrics.Counter(
            "serve_app_model_load_failures",
            description="Versions that failed to download, load or pass their check.",
            tag_keys=("model",),
        )
        self.served_version = metrics.Gauge(
            "serve_app_served_version",
            description="Registry version serving each model, by role.",
            tag_keys=("model", "role"),
        )
        self.challenger_weight = metrics.Gauge(
            "serve_app_challenger_weight_percent",
            description="Percent of a model's traffic sent to its challenger.",
            tag_keys=("model",),
        )
        self.rollout_state = metrics.Gauge(
            "serve_app_rollout_state",
            description="1 for each model's current rollout phase (idle, canary, shadow, manual).",
            tag_keys=("model", "state"),
        )
        self.rollbacks = metrics.Counter(
            "serve_app_rollbacks",
            description="Rollouts rolled back, by reason "
            "(error_rate, latency, drift, quality, manual, load_failed).",
            tag_keys=("model", "reason"),
        )
        self.control_errors = metrics.Counter(
            "serve_app_control_errors",
            description="Distinct failures of a model's rollout work (the other models go on).",
            tag_keys=("model",),
        )
        self.models_routed = metrics.Gauge(
            "serve_app_models_routed", description="Models in the routing table."
        )
        self.pin_disagrees = metrics.Gauge(
            "serve_app_pin_disagrees",
            description="1 while a model's pin (the pins file) differs from its @champion.",
            tag_keys=("model",),
        )
        self.pins_file_error = metrics.Gauge(
            "serve_app_pins_file_error",
            description="1 while the pins file is unreadable or malformed (last good pins kept).",
        )
        self.labels_received = labels_received()
        # Live quality: labelled predictions of the last `quality.window_days`, per model and
        # role (champion, challenger). A figure is absent until its labels are enough.
        self.quality_recall = metrics.Gauge(
            "serve_app_quality_recall",
            description="Labelled frauds the version flagged at its threshold.",
            tag_keys=("model", "role"),
        )
        self.quality_precision = metrics.Gauge(
            "serve_app_quality_precision",
            description="Flagged labelled rows that were frauds.",
            tag_keys=("model", "role"),
        )
        self.quality_false_positive_rate = metrics.Gauge(
            "serve_app_quality_false_positive_rate",
            description="Labelled legitimate rows the version flagged.",
            tag_keys=("model", "role"),
        )
        self.quality_alert_rate = metrics.Gauge(
            "serve_app_quality_alert_rate",
            description="Logged rows (labelled or not) the version flagged.",
            tag_keys=("model", "role"),
        )
        self.quality_pr_auc = metrics.Gauge(
            "serve_app_quality_pr_auc",
            description="Area under the precision-recall curve of the labelled rows.",
            tag_keys=("model", "role"),
        )
        self.quality_labelled_rows = metrics.Gauge(
            "serve_app_quality_labelled_rows",
            description="Labelled rows the live figures rest on.",
            tag_keys=("model", "role"),
        )
        self.quality_labelled_frauds = metrics.Gauge(
            "serve_app_quality_labelled_frauds",
            description="Labelled frauds the live recall rests on.",
            tag_keys=("model", "role"),
        )
        self.quality_label_maturity = metrics.Gauge(
            "serve_app_quality_label_maturity",
            description="Share of the logged rows that carry a label.",
            tag_keys=("model", "role"),
        )
        self.quality_eval_recall = metrics.Gauge(
            "serve_app_quality_eval_recall",
            description="Recall of the version on its evaluation set at its threshold.",
            tag_keys=("model", "role"),
        )
        self.quality_eval_false_positive_rate = metrics.Gauge(
            "serve_app_quality_eval_false_positive_rate",
            description="False-positive rate of the version on its evaluation set.",
            tag_keys=("model", "role"),
        )

        # Drift: the last judged window of each model's logged champion traffic.
        self.drift_psi = metrics.Gauge(
            "serve_app_drift_psi",
            description="PSI of a feature (or `score`) in the last window against the reference.",
            tag_keys=("model", "feature"),
        )
        self.drift_alert_rate_ratio = metrics.Gauge(
            "serve_app_drift_alert_rate_ratio",
            description="The last window's alert rate over the reference's at the threshold.",
            tag_keys=("model",),
        )
        self.drift_status = metrics.Gauge(
            "serve_app_drift_status",
            description="0 steady, 1 a signal breaching (not yet long enough), 2 drifted.",
            tag_keys=("model",),
        )
        self.drift_windows = metrics.Counter(
            "serve_app_drift_windows",
            description="Windows judged, by result (clean, breach).",
            tag_keys=("model", "result"),
        )
        self.drift_alarms = metrics.Counter(
            "serve_app_drift_alarms",
            description="Drift episodes detected (a breach over consecutive windows).",
            tag_keys=("model",),
        )
        self.retrains = metrics.Counter(
            "serve_app_retrains",
            description="Retraining jobs by outcome (started, registered, refused, failed).",
            tag_keys=("model", "outcome"),
        )
        self.retrain_refusals = metrics.Counter(
            "serve_app_retrain_refusals",
            description="Retrains refused, by guard (see serve_app/core/retrain_guards.py).",
            tag_keys=("model", "reason"),
        )

    def export_route(self, name: str, route: ModelRoute, phase: str) -> None:
        """The gauges of one routed model: versions by role, challenger weight, phase."""
        challenger = route.challenger or 0
        for role, version in (("champion", route.champion), ("challenger", challenger)):
            self.served_version.set(version, tags={"model": name, "role": role})
        weight = route.challenger_weight if route.challenger else 0.0
        self.challenger_weight.set(weight, tags={"model": name})
        for state in PHASES:
            self.rollout_state.set(float(state == phase), tags={"model": name, "state": state})

    def forget_model(self, name: str) -> None:
        for role in ("champion", "challenger"):
            self.served_version.set(0, tags={"model": name, "role": role})
        self.challenger_weight.set(0.0, tags={"model": name})
        self.pin_disagrees.set(0.0, tags={"model": name})
        for state in PHASES:
            self.rollout_state.set(0.0, tags={"model": name, "state": state})
