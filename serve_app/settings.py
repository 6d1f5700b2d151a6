"""One settings schema for the config file, the Serve `user_config` and the CLI.

`configs/serve_config.yaml` passes these fields as the application's `args`; the
builder validates them here, derives the deployments' options from them and hands
the same validated dict to every replica as its `user_config`. Ray Serve hashes an
application's `args` into its code version, so a `serve deploy` that changes any setting
rebuilds the application: every replica and the control actor are replaced (a rolling
update, no request dropped); rollouts resume from their registry tags and the event
history lives in a database (`history`), so nothing is lost by it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_HOME = "./.serve-app"
HOME_ENV = "SERVE_APP_HOME"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
LABELS_DATABASE_ENV = "SERVE_APP_LABELS_DATABASE_URI"  # a Secret on Kubernetes: it holds a password
APP_NAME = "serve-app"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scaling(_Strict):
    """Replica bounds and autoscaling of one Serve deployment (Serve's own options)."""

    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0)
    max_ongoing_requests: int = Field(64, ge=1)
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(120.0, ge=0)
    num_cpus: float = Field(0.5, gt=0)
    max_replicas_per_node: int | None = Field(
        None,
        ge=1,
        description="At most this many replicas on one Ray node (Serve's option); 1 puts "
        "each replica on its own node, so that losing a node leaves the others serving.",
    )
    max_queued_requests: int = Field(
        128,
        ge=-1,
        description="Requests a replica holds waiting for one of its max_ongoing_requests "
        "slots (Serve's option; -1: no bound). Beyond it a request is shed at once with "
        "`shed_status` and Retry-After instead of queueing past any useful deadline.",
    )
    shed_status: Literal[429, 503] = Field(503, description="The status of a shed request.")
    retry_after_s: float = Field(1.0, ge=0, description="The Retry-After of a shed request.")

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be >= min_replicas")
        return self

    def shedding(self) -> dict[str, Any]:
        """Serve's deployment options that bound the queue and answer the overflow."""
        return {
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": {
                "status_code": self.shed_status,
                "retry_after_s": self.retry_after_s,
            },
        }

    def autoscaling_config(self) -> dict[str, float]:
        return {
            "min_replicas": self.min_replicas,
            "initial_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
        }


class RouterSettings(Scaling):
    """The ingress router: the HTTP API, the canary split, and the fast lane in process."""

    max_models_per_replica: int = Field(
        128, ge=1, description="Models the fast lane keeps open per replica (LRU)."
    )
    preload_top_k: int = Field(
        10, ge=0, description="Models opened on every new replica at start, busiest first."
    )
    target_busy: float = Field(
        0.6,
        gt=0,
        le=1,
        description="Share of wall time each replica should spend handling requests: "
        "the router autoscales on it (core/autoscaling.py), not on ongoing requests.",
    )


POOL_NAME = r"^[a-z][a-z0-9-]{0,30}$"


class ModelPoolSettings(Scaling):
    """A model pool: a deployment with its own Python environment, behind the router.

    Models are assigned to it by the registered-model tag `serve_app.pool` or by the
    name patterns in `models`; the router picks the version and the pool scores it
    (Serve's model multiplexing: the pool replica that has the version open).
    """

    name: str = Field(pattern=POOL_NAME, description="Also the deployment's name suffix.")
    models: tuple[str, ...] = Field((), description="Name patterns served by this pool.")
    runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="Ray runtime_env: pip, env_vars (a container on KubeRay)."
    )
    max_models_per_replica: int = Field(32, ge=1, description="Serve multiplexing LRU bound.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources a replica needs: places the pool on a worker group "
        "that offers them (its own image or hardware on KubeRay).",
    )
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.25, gt=0)


class RegistrySettings(_Strict):
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking/registry URI; default: $MLFLOW_TRACKING_URI, "
        "else sqlite in the home folder.",
    )
    model_filter: str = Field(
        "", description="`search_registered_models` filter selecting the served models."
    )
    poll_interval_s: float = Field(2.0, gt=0)
    download_workers: int = Field(4, ge=1)
    pins_file: str | None = Field(
        None,
        description="A YAML file `pins: {model: version}` kept in Git (configs/pins.yaml): a "
        "pinned model serves that version over its aliases (core/pins.py); re-read on every "
        "poll when it changes. None: the aliases alone decide.",
    )
    broken_retry_s: float = Field(
        60.0,
        gt=0,
        description="How long a champion that failed its load check waits before it is "
        "checked again: an artifact repaired in place serves without another alias move.",
    )


class LimitSettings(_Strict):
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_rows: int = Field(100_000, ge=1)


class DeadlineSettings(_Strict):
    """Request deadlines (core/deadlines.py): a request not scored in time gets a 504."""

    header: str = Field(
        "x-request-timeout-ms", description="The header carrying a request's budget in ms."
    )
    default_ms: float | None = Field(
        None, gt=0, description="The budget of requests that bring none (None: no deadline)."
    )
    models: dict[str, float] = Field(
        default_factory=dict,
        description="Budgets by model name pattern (`fraud-card-*`: 50), before default_ms.",
    )


class RoutingSettings(_Strict):
    """Where a request's routing key (for sticky canary splits) comes from, and which model
    MLflow's single-model paths (`POST /invocations`) score."""

    default_model: str | None = Field(
        None,
        description="The model `POST /invocations` scores, for clients of `mlflow models "
        "serve`; without it that path answers 404 and /models/{name}/invocations serves.",
    )

    key_header: str = "x-routing-key"
    key_field: str | None = Field(
        None,
        description="A request parameter holding the key (V2 `parameters`, MLflow `params`), "
        "such as an account id; the header wins when both are present.",
    )


class CacheSettings(_Strict):
    """The prediction cache of each router replica; off for every model not listed."""

    models: tuple[str, ...] = Field(
        (), description="Names or shell patterns (`fraud-card-*`) of the models to cache."
    )
    ttl_s: float = Field(60.0, gt=0, description="Seconds an answer may be reused.")
    max_entries: int = Field(10_000, ge=1, description="Cached answers per replica (LRU).")


class ExplainSettings(_Strict):
    """Explanations (`POST /v2/models/{name}/explain`): TreeSHAP costs far more than a score,
    so they have a budget of their own, in rows, per model and router replica."""

    rows_per_s: float = Field(
        50.0, gt=0, description="Rows a second one router replica explains for one model."
    )
    burst_rows: int = Field(
        100, ge=1, description="Rows explained at once before 429s; also a request's row limit."
    )
    default_top_k: int = Field(
        5, ge=1, description="Features named per row when the request's top_k is absent."
    )
    max_explainers_per_replica: int = Field(
        16, ge=1, description="LightGBM models a router replica keeps open for explaining (LRU)."
    )


class RolloutPolicy(_Strict):
    """How a `challenger` earns traffic; a registered-model tag can override any field."""

    mode: Literal["canary", "shadow"] = "canary"
    steps: tuple[float, ...] = Field((5.0, 25.0, 50.0, 100.0), min_length=1)
    step_dwell_s: float = Field(60.0, ge=0)
    step_min_requests: int = Field(100, ge=0)
    shadow_sample_percent: float = Field(100.0, gt=0, le=100)
    gate_auc_margin: float = Field(0.02, ge=0, description="Allowed AUC drop vs the champion.")
    gate_recall_margin: float = Field(0.05, ge=0, description="Allowed recall drop.")
    gate_latency_budget_ms: float = Field(5.0, gt=0, description="Single-row p99 budget.")
    guard_min_requests: int = Field(30, ge=1)
    guard_max_error_rate_delta: float = Field(0.01, ge=0)
    guard_max_p99_ratio: float = Field(3.0, ge=1)
    guard_p99_slack_ms: float = Field(2.0, ge=0)
    guard_max_psi: float = Field(0.25, gt=0)
    guard_min_scores: int = Field(
        200, ge=1, description="Scores each side needs before drift (PSI) is judged."
    )
    promotion_grace_s: float = Field(300.0, ge=0)
    guard_quality_min_labels: int = Field(
        200, ge=1, description="Labelled rows each version needs before quality is judged."
    )
    guard_quality_min_frauds: int = Field(
        20, ge=1, description="Labelled frauds each version needs before recall is judged."
    )
    guard_max_recall_drop: float = Field(
        0.05, ge=0, description="Allowed live recall below the champion's, same cohorts."
    )
    guard_max_fpr_rise: float = Field(
        0.01, ge=0, description="Allowed live false-positive rate above the champion's."
    )
    guard_quality_alpha: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="A quality breach (a gap beyond the margin) must be this unlikely by "
        "chance at each look (one-sided two-proportion z-test; the guard looks again every "
        "quality interval): at 200 labels an FPR is known to about +-0.01 only.",
    )

    @field_validator("steps")
    @classmethod
    def _rising_to_100(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if list(steps) != sorted(set(steps)) or steps[0] <= 0 or steps[-1] != 100.0:
            raise ValueError("steps must rise strictly, above 0, and end at 100")
        return steps


class HistorySettings(_Strict):
    """Where the control actor's event history is kept (it outlives the actor)."""

    database_uri: str | None = Field(
        None, description="SQLAlchemy URL; default: sqlite file history.db in the home folder."
    )
    retention_days: float = Field(400.0, gt=0, description="Events older than this are pruned.")


class KafkaSettings(_Strict):
    """A Kafka sink for the prediction log (any Kafka-protocol broker)."""

    bootstrap_servers: str = Field(
        "", description="host:port[,host:port]; env SERVE_APP_KAFKA_BOOTSTRAP_SERVERS wins."
    )
    topic: str = Field("serve-app.predictions", min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password_env: str = Field(
        "SERVE_APP_KAFKA_PASSWORD", description="The variable holding the SASL password."
    )
    ssl_ca_location: str | None = None
    buffer_records: int = Field(
        100_000, ge=1, description="Records the producer buffers while the broker is away."
    )
    delivery_timeout_s: float = Field(
        120.0, gt=0, description="A record not acknowledged by then is dropped and counted."
    )
    properties: dict[str, str] = Field(
        default_factory=dict, description="Further librdkafka properties, passed as they are."
    )


class PredictionLogSettings(_Strict):
    """Every scored row, logged off the request path (serve_app/predictions)."""

    enabled: bool = True
    sink: Literal["parquet", "kafka"] = Field(
        "parquet", description="parquet: files under <home>/predictions; kafka: one topic."
    )
    directory: str | None = Field(None, description="Parquet root; default <home>/predictions.")
    sample_percent: dict[str, float] = Field(
        default_factory=dict,
        description="Per model name or shell pattern: percent of requests logged (default 100).",
    )
    queue_records: int = Field(
        50_000, ge=1, description="Rows each replica queues; beyond it rows are dropped."
    )
    batch_records: int = Field(
        20_000, ge=1, description="Rows the writer hands a sink at once (at most)."
    )
    flush_interval_s: float = Field(
        5.0,
        gt=0,
        description="The writer wakes this often: larger writes cost less a row (a Parquet "
        "write has a fixed cost per model in it), and labels come days later anyway.",
    )
    file_max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Parquet rotation size.")
    file_max_age_s: float = Field(300.0, gt=0, description="Parquet rotation age.")
    key_hash_secret_env: str = Field(
        "SERVE_APP_KEY_HASH_SECRET",
        description="The variable holding the routing-key hash secret; default: a secret "
        "file created in the home folder.",
    )
    kafka: KafkaSettings = KafkaSettings()

    @field_validator("sample_percent")
    @classmethod
    def _percent(cls, rates: dict[str, float]) -> dict[str, float]:
        bad = [pattern for pattern, rate in rates.items() if not 0.0 <= rate <= 100.0]
        if bad:
            raise ValueError(f"sample_percent must lie in 0..100 (check {bad[:3]})")
        return rates


class LabelSettings(_Strict):
    """The label store: the join of logged predictions and late labels."""

    database_uri: str | None = Field(
        None,
        description=f"SQLAlchemy URL; default: ${LABELS_DATABASE_ENV}, else sqlite file "
        "labels.db in the home folder.",
    )
    retention_days: float = Field(180.0, gt=0, description="Predictions stay joinable this long.")
    max_batch: int = Field(10_000, ge=1, description="Labels per feedback request.")
    kafka_topic: str | None = Field(
        None,
        description="A Kafka topic of labels ({model, request_id, label, label_time?, row?} "
        "JSON per message) the control actor consumes, on prediction_log.kafka's brokers.",
    )
    kafka_group: str = Field(
        "serve-app-labels", description="The consumer's offsets are kept here."
    )


class QualitySettings(_Strict):
    """Live quality per model version, from labelled predictions."""

    interval_s: float = Field(60.0, gt=0, description="How often the gauges are recomputed.")
    window_days: int = Field(30, ge=1, description="Cohorts the gauges cover.")


class DriftSettings(_Strict):
    """When a model's traffic has drifted from its serving version's reference profile.

    Defaults chosen by simulation (benchmarks/drift_detection.py, the demo seed's traffic
    against ten 4,000-row references): no alarm in 10 x 50 windows without drift, where
    PSI never passed 0.036; 2% of those windows breach on the alert rate alone, so one
    breach is no alarm (1 window in a row: 5 of 10 streams false-alarm; 3: none).
    """

    enabled: bool = Field(True, description="Judge each model's logged traffic for drift.")
    window_rows: int = Field(
        1_000,
        ge=100,
        description="Rows a window needs to be judged: PSI of 10 bins is noise below ~500.",
    )
    min_window_span_s: float = Field(
        60.0,
        ge=0,
        description="Seconds a window must span: a shorter one is a burst, not the traffic.",
    )
    psi_alarm: float = Field(
        0.1,
        gt=0,
        description="PSI of a feature or the score above which a window breaches: ~3x the "
        "no-drift maximum at 1,000 rows; 0.2 never sees amount x1.5 (PSI 0.10).",
    )
    alert_rate_ratio: float = Field(
        1.5,
        gt=1,
        description="Alert rate at the threshold this many times the reference's (or 1/x).",
    )
    alert_rate_alpha: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="... and this unlikely if window and reference share a rate (exact "
        "conditional binomial test; 0.05 false-alarmed 2 of 10 streams).",
    )
    missing_rate_delta: float = Field(
        0.05,
        gt=0,
        le=1,
        description="A feature's missing-value rate this far from the reference's breaches.",
    )
    consecutive_windows: int = Field(
        3,
        ge=1,
        description="Judged windows in a row the same signal must breach to raise the alarm.",
    )
    ignore_features: tuple[str, ...] = Field(
        (),
        description="Features not judged, such as the hour of day when a window spans less "
        "than a day (it moves by design).",
    )


class RetrainSettings(_Strict):
    """Retraining on logged traffic and matured labels (serve_app/retraining), and the
    guards against a bad retrain (serve_app/core/retrain_guards.py)."""

    on_drift: bool = Field(True, description="Start a retrain when drift is detected.")
    on_quality: bool = Field(
        True, description="Start one when the champion's live quality falls below its evaluation's."
    )
    quality_recall_drop: float = Field(0.10, gt=0, description="Live recall this far below.")
    quality_fpr_rise: float = Field(
        0.02, gt=0, description="Live false-positive rate this far above."
    )
    quality_min_frauds: int = Field(50, ge=1, description="Labelled frauds before recall counts.")
    quality_min_labels: int = Field(
        1_000, ge=1, description="Legitimate rows before the FPR counts."
    )
    quality_alpha: float = Field(
        0.01, gt=0, lt=1, description="... and the gap significant at this."
    )
    data_window_days: float = Field(
        30.0, gt=0, description="Logged rows this recent make the training set."
    )
    label_maturity_s: float = Field(
        0.0,
        ge=0,
        description="Rows younger than this are left out: their labels may still change "
        "(card disputes take up to 120 days; 0 takes every labelled row).",
    )
    holdout_fraction: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="The newest share of the labelled rows (by time, never at random) held "
        "out as the new evaluation set, on which champion and challenger are gated.",
    )
    min_labelled_rows: int = Field(2_000, ge=1, description="Fewer: refused (too_few_rows).")
    min_frauds: int = Field(
        200,
        ge=1,
        description="Labelled frauds needed: the gate's recall margin of 0.05 is noise with "
        "fewer than a few hundred (too_few_frauds).",
    )
    max_label_rate_ratio: float = Field(
        3.0,
        gt=1,
        description="Label rate allowed against the serving version's evaluation set, "
        "either way (implausible_label_rate: a broken or poisoned feed).",
    )
    leakage_auc: float = Field(
        0.98, gt=0.5, le=1, description="A feature that alone ranks labels this well leaks."
    )
    cooldown_s: float = Field(
        21_600.0, ge=0, description="No retrain within this of the model's last new version."
    )
    retry_s: float = Field(
        600.0, ge=0, description="After a refused or failed retrain, wait this long to retry."
    )
    max_concurrent: int = Field(1, ge=1, description="Retraining jobs at once, all models.")
    num_cpus: float = Field(
        0.0,
        ge=0,
        description="CPUs the Ray task reserves (0: it runs beside the replicas, one thread).",
    )


class AdminSettings(_Strict):
    """Who may read the admin API; changing anything always needs a token with `admin`."""

    tokens_file: str | None = Field(
        None,
        description="YAML or JSON file of named principals and their scopes (README: "
        "Access); env $SERVE_APP_TOKENS_FILE when unset. Read by every router replica.",
    )
    reads_need_token: bool = Field(
        False,
        description="GET /admin/... needs a token with `read` (or `admin`) on the model too "
        "(403 without one configured): "
        "for a cluster whose HTTP route is reachable by clients, as in the prod overlay.",
    )


class AppSettings(_Strict):
    home: str = Field(DEFAULT_HOME, description=f"State folder; env ${HOME_ENV} wins.")
    router: RouterSettings = RouterSettings()
    pools: tuple[ModelPoolSettings, ...] = ()
    registry: RegistrySettings = RegistrySettings()
    limits: LimitSettings = LimitSettings()
    deadlines: DeadlineSettings = DeadlineSettings()
    routing: RoutingSettings = RoutingSettings()
    cache: CacheSettings = CacheSettings()
    explain: ExplainSettings = ExplainSettings()
    rollout: RolloutPolicy = RolloutPolicy()
    history: HistorySettings = HistorySettings()
    prediction_log: PredictionLogSettings = PredictionLogSettings()
    labels: LabelSettings = LabelSettings()
    quality: QualitySettings = QualitySettings()
    drift: DriftSettings = DriftSettings()
    retrain: RetrainSettings = RetrainSettings()
    admin: AdminSettings = AdminSettings()

    @field_validator("pools")
    @classmethod
    def _distinct_pools(cls, pools: tuple[ModelPoolSettings, ...]) -> tuple:
        names = [pool.name for pool in pools]
        if len(names) != len(set(names)):
            raise ValueError(f"pool names must be distinct: {names}")
        return pools

    def resolved(self) -> AppSettings:
        """Pin the home folder and registry URI to absolute values.

        Done once, where the app is built, so that every replica (whatever its
        working directory) reads the same registry.
        """
        home = Path(os.environ.get(HOME_ENV) or self.home).expanduser().resolve()
        uri = self.registry.tracking_uri or os.environ.get(TRACKING_URI_ENV)
        uri = uri or f"sqlite:///{home / 'mlflow.db'}"
        pins = self.registry.pins_file  # relative to where the app is built, as `home` is
        pins = pins and str(Path(pins).expanduser().resolve())
        registry = self.registry.model_copy(update={"tracking_uri": uri, "pins_file": pins})
        database = self.history.database_uri or f"sqlite:///{home / 'history.db'}"
        history = self.history.model_copy(update={"database_uri": database})
        labels = self.labels.database_uri or os.environ.get(LABELS_DATABASE_ENV)
        labels = labels or f"sqlite:///{home / 'labels.db'}"
        log = self.prediction_log
        directory = log.directory or str(home / "predictions")
        update = {
            "home": str(home),
            "registry": registry,
            "history": history,
            "labels": self.labels.model_copy(update={"database_uri": labels}),
            "prediction_log": log.model_copy(update={"directory": directory}),
        }
        return self.model_copy(update=update)

    @classmethod
    def from_serve_config(cls, document: dict[str, Any]) -> AppSettings:
        """The `args` of serve-app's application in a Serve config document."""
        apps = [a for a in document.get("applications", []) if a.get("name") == APP_NAME]
        if not apps:
            raise ValueError(f"the Serve config has no application named {APP_NAME!r}")
        return cls.model_validate(apps[0].get("args") or {})

    @property
    def artifacts_dir(self) -> Path:
        return Path(self.home) / "artifacts"
