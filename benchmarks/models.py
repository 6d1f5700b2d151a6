"""The benchmark's models: one seeded registry, exported for every peer.

- serve-app reads the registry itself (mlflow.db + artifacts/ under the work folder);
- the FastAPI baseline gets each champion's ONNX graph as a file;
- MLServer gets LightGBM boosters, retrained from the same deterministic data and
  checked against the registry's ONNX graph, since mlserver-lightgbm cannot read ONNX.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.payloads import transactions

PARITY_TOLERANCE = 1e-4
Progress = Callable[[str], None]


def _registry(home: Path):
    from serve_app.registry.mlflow_registry import Registry

    home.mkdir(parents=True, exist_ok=True)
    return Registry(f"sqlite:///{home.resolve()}/mlflow.db", home.resolve() / "artifacts")


def seed(home: Path, count: int | None, progress: Progress) -> list[str]:
    """Seed the demo models the registry lacks; return the served model names in seed order."""
    from serve_app.registry import seed as demo

    names = list(demo.DEMO_MODELS[: count or len(demo.DEMO_MODELS)])
    registry = _registry(home)
    missing = [n for n in names if n not in registry.sweep()]
    if missing:
        progress(f"seeding {len(missing)} demo models into {home} (first run only) ...")
        demo.seed_demo_models(registry, count=len(names), progress=lambda line: None)
    return names


CANARY_EVERY = 6  # one model in six runs a canary while serve-app is measured
CANARY_WEIGHT = 10.0
# A rollout policy (registered-model tag) that holds the first step for the whole run.
CANARY_POLICY = {"steps": [CANARY_WEIGHT, 100.0], "step_dwell_s": 86_400.0}


def start_canaries(home: Path, names: list[str], progress: Progress) -> list[str]:
    """Give one model in six a `challenger` held at 10%, so serve-app splits their traffic."""
    from serve_app.registry.mlflow_registry import CHALLENGER
    from serve_app.registry.seed import seed_model
    from serve_app.serving.controller import POLICY_TAG

    registry = _registry(home)
    aliases = {name: info.aliases for name, info in registry.sweep().items()}
    chosen = names[::CANARY_EVERY]  # as peers.serve_app expects
    missing = [name for name in chosen if CHALLENGER not in aliases[name]]
    if missing:
        progress(f"registering {len(missing)} challengers (canary at {CANARY_WEIGHT:g}%) ...")
    for name in missing:
        registry.set_model_tag(name, POLICY_TAG, json.dumps(CANARY_POLICY))
        seed_model(registry, name, alias=CHALLENGER, salt="benchmark-challenger")
    return chosen


def assign_pools(home: Path, names: list[str]) -> list[str]:
    """Put the demo's pooled models among `names` on their pool, as the seeder does on a
    fresh home (a benchmark registry seeded before pools existed lacks the tag)."""
    from serve_app.core.placement import POOL_TAG
    from serve_app.registry.seed import DEMO_POOL, POOLED_DEMO_MODELS

    registry = _registry(home)
    pooled = [name for name in POOLED_DEMO_MODELS if name in names]
    for name in pooled:
        registry.set_model_tag(name, POOL_TAG, DEMO_POOL)
    return pooled


def export_onnx(home: Path, names: list[str], out: Path) -> dict[str, Path]:
    """Each model's champion ONNX graph as `out/<name>.v<version>.onnx` (cached)."""
    from serve_app.registry.mlflow_registry import CHAMPION

    registry = _registry(home)
    aliases = {name: info.aliases for name, info in registry.sweep().items()}
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in names:
        path = out / f"{name}.v{aliases[name][CHAMPION]}.onnx"
        if not path.is_file():
            fetched = registry.fetch(name, aliases[name][CHAMPION])
            path.write_bytes(fetched.artifact.onnx_bytes)
        files[name] = path
    return files


def onnx_scores(path: Path, batch: np.ndarray) -> np.ndarray:
    from benchmarks.fastapi_baseline import Model

    return Model(path).predict(batch)


def write_mlserver_repository(
    onnx_files: dict[str, Path], repository: Path, progress: Progress
) -> None:
    """`repository/<name>/model.bst` + model-settings.json per model, checked against ONNX."""
    import lightgbm as lgb

    from serve_app.registry import seed as demo

    rows = transactions(256, seed=11)
    todo = [n for n in onnx_files if not (repository / n / "model-settings.json").is_file()]
    if todo:
        progress(f"retraining {len(todo)} LightGBM boosters for MLServer ...")
    for name in todo:
        frame, labels = demo.synthetic_transactions(name, demo.TRAIN_ROWS, "train")
        booster = demo.train_booster(frame, labels)
        folder = repository / name
        folder.mkdir(parents=True, exist_ok=True)
        booster.save_model(str(folder / "model.bst"))
        reloaded = lgb.Booster(model_file=str(folder / "model.bst"))
        gap = np.abs(reloaded.predict(rows, num_threads=1) - onnx_scores(onnx_files[name], rows))
        if gap.max() > PARITY_TOLERANCE:
            raise RuntimeError(f"{name}: the retrained booster differs from the registry's graph")
        version = onnx_files[name].stem.rpartition(".v")[2]
        settings = {
            "name": name,
            "implementation": "mlserver_lightgbm.LightGBMModel",
            "parameters": {"uri": "./model.bst", "version": version},
        }
        (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))
