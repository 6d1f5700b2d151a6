"""The MLflow model registry: the only module that imports mlflow.

Registered models, versions and aliases are the source of truth: the control actor
sweeps them, and the CLI and the demo seeder write them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from serve_app.registry.features import LABEL_COLUMN
from serve_app.runtime.onnx import ModelArtifact

logging.getLogger("mlflow").setLevel(logging.WARNING)

CHAMPION = "champion"
CHALLENGER = "challenger"
EXPERIMENT = "serve-app"
ONNX_FILE = "model.onnx"
EVAL_SET_TAG = "serve_app.eval_set"
THRESHOLD_TAG = "serve_app.threshold"  # the version's alert threshold, set at registration
EVAL_RECALL_TAG = "serve_app.eval_recall"  # its figures on the evaluation set, at it
EVAL_FPR_TAG = "serve_app.eval_false_positive_rate"
DEFAULT_THRESHOLD = 0.5  # versions registered before thresholds were tagged
PROFILE_TAG = "serve_app.reference_profile"  # where the version's drift reference is
PROFILE_ARTIFACT = "profile/reference_profile.json"
# The LightGBM text model the ONNX graph was converted from, for explanations (TreeSHAP).
# A run artifact named by a version tag, not a file in the model's folder: `fetch` downloads
# that folder for every scoring load, and only the first explanation of a version needs this.
EXPLAINER_TAG = "serve_app.lightgbm_model"
EXPLAINER_ARTIFACT = "explainer/model.txt"
PIP_REQUIREMENTS = ["onnx", "onnxruntime"]


class RegistryError(Exception):
    pass


class VersionNotFound(RegistryError):
    """The registry has no such version: a client's mistake, not a failure to load."""


@dataclass(frozen=True)
class RegisteredModelInfo:
    name: str
    aliases: dict[str, int] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FetchedVersion:
    artifact: ModelArtifact
    input_example: np.ndarray
    eval_figures: dict[str, float] = field(default_factory=dict)  # recall, false_positive_rate


def threshold_from_tags(tags: dict[str, str]) -> float:
    """The version's alert threshold; a tag that is not a number in [0, 1] is an error:
    the version would flag the wrong transactions, so it never serves."""
    raw = tags.get(THRESHOLD_TAG)
    if raw is None:
        return DEFAULT_THRESHOLD
    try:
        value = float(raw)
    except ValueError:
        raise RegistryError(f"the version's {THRESHOLD_TAG} tag is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise RegistryError(f"the version's {THRESHOLD_TAG} tag is outside [0, 1]")
    return value


def calibration_tags(
    threshold: float, recall: float | None, false_positive_rate: float | None
) -> dict[str, str]:
    """A version's threshold and evaluation-set figures as tags (repr: exact round trip)."""
    tags = {THRESHOLD_TAG: repr(float(threshold))}
    if recall is not None:
        tags[EVAL_RECALL_TAG] = repr(recall)
    if false_positive_rate is not None:
        tags[EVAL_FPR_TAG] = repr(false_positive_rate)
    return tags


def eval_figures_from_tags(tags: dict[str, str]) -> dict[str, float]:
    figures = {}
    for key, tag in (("recall", EVAL_RECALL_TAG), ("false_positive_rate", EVAL_FPR_TAG)):
        try:
            figures[key] = float(tags[tag])
        except (KeyError, ValueError):
            continue
    return figures


# MLflow's HTTP client retries a refused or failed call 7 times with doubling waits, which
# keeps one registry call blocked for minutes while the server is away. serve-app polls the
# registry anyway (`registry.poll_interval_s`): a call that fails fast is retried at the next
# poll, and meanwhile status, events and the rollout clock keep going. Set in the
# environment, where MLflow reads them on every call; a value already there wins.
FAIL_FAST = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


class Registry:
    def __init__(self, tracking_uri: str, artifacts_dir: Path | None = None) -> None:
        for key, value in FAIL_FAST.items():
            os.environ.setdefault(key, value)
        self.tracking_uri = tracking_uri
        self._artifacts_dir = artifacts_dir
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # -- reading ----------------------------------------------------------------
    def sweep(self, filter_string: str = "") -> dict[str, RegisteredModelInfo]:
        """Every registered model with its aliases, in one paginated search."""
        found: dict[str, RegisteredModelInfo] = {}
        token = None
        while True:
            page = self.client.search_registered_models(
                filter_string=filter_string or None, max_results=1000, page_token=token
            )
            for model in page:
                aliases = {alias: int(version) for alias, version in (model.aliases or {}).items()}
                found[model.name] = RegisteredModelInfo(model.name, aliases, dict(model.tags or {}))
            token = page.token
            if not token:
                return found

    def fetch(self, name: str, version: int) -> FetchedVersion:
        """Download one version and read its ONNX graph, signature and input example."""
        with tempfile.TemporaryDirectory(prefix="serve-app-") as scratch:
            try:
                local = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=f"models:/{name}/{version}", dst_path=scratch
                    )
                )
            except MlflowException as error:
                if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                    raise VersionNotFound(f"{name} has no version {version}") from None
                raise
            onnx_path = local / ONNX_FILE
            if not onnx_path.is_file():
                raise RegistryError(f"{name} v{version} has no {ONNX_FILE}: not an ONNX model")
            meta = Model.load(str(local))
            if meta.signature is None:
                raise RegistryError(f"{name} v{version} was logged without a signature")
            features = tuple(meta.signature.inputs.input_names())
            example = meta.load_input_example(str(local))
            if example is None:
                raise RegistryError(f"{name} v{version} was logged without an input example")
            rows = pd.DataFrame(example)[list(features)].to_numpy(dtype=np.float32)
            onnx_bytes = onnx_path.read_bytes()
        tags = dict(self.client.get_model_version(name, str(version)).tags or {})
        threshold = threshold_from_tags(tags)
        artifact = ModelArtifact(name, version, onnx_bytes, features, threshold)
        return FetchedVersion(artifact, rows, eval_figures_from_tags(tags))

    def has_version(self, name: str, version: int) -> bool:
        """Whether the registry has this version: a pin may name one never registered."""
        try:
            self.client.get_model_version(name, str(version))
        except MlflowException as error:
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                return False
            raise
        return True

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        return dict(self.client.get_model_version(name, str(version)).tags or {})

    def reference_profile(self, name: str, version: int) -> str | None:
        """The version's drift reference (JSON, core/drift.py), None if it has none."""
        uri = self.client.get_model_version(name, str(version)).tags.get(PROFILE_TAG)
        if not uri:
            return None
        return mlflow.artifacts.load_text(uri)

    def booster_text(self, name: str, version: int) -> str | None:
        """The version's LightGBM text model, None if it was registered without one (an ONNX
        file, or a version from before explanations)."""
        uri = self.client.get_model_version(name, str(version)).tags.get(EXPLAINER_TAG)
        if not uri:
            return None
        return mlflow.artifacts.load_text(uri)

    def eval_set(self, name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]] | None:
        """The model's registered evaluation set: (rows, labels, feature names)."""
        uri = self.client.get_registered_model(name).tags.get(EVAL_SET_TAG)
        if not uri:
            return None
        with tempfile.TemporaryDirectory(prefix="serve-app-eval-") as scratch:
            path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=scratch)
            frame = pd.read_csv(path)
        if LABEL_COLUMN not in frame.columns:
            raise RegistryError(f"the evaluation set has no '{LABEL_COLUMN}' label column")
        features = tuple(c for c in frame.columns if c != LABEL_COLUMN)
        text = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
        if text:  # never let a cell value reach an error message
            raise RegistryError(f"the evaluation set's feature columns {text} are not numeric")
        return (
            frame[list(features)].to_numpy(np.float32),
            frame[LABEL_COLUMN].to_numpy(),
            features,
        )

    # -- writing ----------------------------------------------------------------
    def register(
        self,
        name: str,
        onnx_bytes: bytes,
        features: Sequence[str],
        example: np.ndarray,
        *,
        alias: str | None = None,
        eval_set: pd.DataFrame | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        profile: str | None = None,
        booster_text: str | None = None,
    ) -> int:
        """Log an ONNX model with signature and input example, register it, set the alias;
        `booster_text` is the LightGBM model it was converted from (text, never a pickle)."""
        import onnx  # the registry is the one writer of ONNX models into MLflow

        signature = ModelSignature(
            inputs=Schema([ColSpec("float", f) for f in features]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), "probability")]),
        )
        input_example = pd.DataFrame(np.asarray(example, np.float32), columns=list(features))
        mlflow.set_experiment(self._experiment())
        with mlflow.start_run(run_name=name) as run:
            if eval_set is not None:
                with tempfile.TemporaryDirectory() as scratch:
                    path = Path(scratch) / "eval.csv"
                    eval_set.to_csv(path, index=False)
                    mlflow.log_artifact(str(path), artifact_path="evaluation")
            if profile is not None:  # the drift monitor's reference (core/drift.py)
                mlflow.log_text(profile, PROFILE_ARTIFACT)
            if booster_text is not None:  # what explanations are computed from
                mlflow.log_text(booster_text, EXPLAINER_ARTIFACT)
            if metrics:
                mlflow.log_metrics(metrics)
            info = mlflow.onnx.log_model(
                onnx.load_from_string(onnx_bytes),
                name="model",
                signature=signature,
                input_example=input_example,
                pip_requirements=PIP_REQUIREMENTS,
                onnx_execution_providers=["CPUExecutionProvider"],
                registered_model_name=name,
            )
        version = int(info.registered_model_version)
        tags = dict(tags or {})
        if profile is not None:
            tags[PROFILE_TAG] = f"runs:/{run.info.run_id}/{PROFILE_ARTIFACT}"
        if booster_text is not None:
            tags[EXPLAINER_TAG] = f"runs:/{run.info.run_id}/{EXPLAINER_ARTIFACT}"
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, value)
        if eval_set is not None:
            self.client.set_registered_model_tag(
                name, EVAL_SET_TAG, f"runs:/{run.info.run_id}/evaluation/eval.csv"
            )
        if alias:
            self.set_alias(name, alias, version)
        return version

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        with contextlib.suppress(MlflowException):  # already gone is fine
            self.client.delete_registered_model_alias(name, alias)

    def tag_version(self, name: str, version: int, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, str(version), key, value)

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.client.set_registered_model_tag(name, key, value)

    def delete_model_tag(self, name: str, key: str) -> None:
        with contextlib.suppress(MlflowException):  # already gone is fine
            self.client.delete_registered_model_tag(name, key)

    def _experiment(self) -> str:
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            # An embedded registry keeps artifacts in the home folder; a tracking server
            # chooses (and serves) its own store, which every pod can read.
            remote = self.tracking_uri.startswith(("http://", "https://"))
            local = self._artifacts_dir and not remote
            location = self._artifacts_dir.resolve().as_uri() if local else None
            mlflow.create_experiment(EXPERIMENT, artifact_location=location)
        return EXPERIMENT
