"""The peer "single FastAPI + onnxruntime process": every model in memory, V2 infer.

    python -m benchmarks.fastapi_baseline --models-dir DIR --port 8340

DIR holds `<model name>.v<version>.onnx` files, exported from the serve-app registry by run.py
(each model's `champion` version), so both servers score the same graphs. Sessions use
one intra-op thread, as serve-app's do. No framework validation on the hot path: the
body is parsed with orjson and handed to onnxruntime.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response

JSON = "application/json"


class Model:
    def __init__(self, path: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.name, _, self.version = path.stem.rpartition(".v")
        self.input = self.session.get_inputs()[0].name
        self.width = self.session.get_inputs()[0].shape[-1]
        self.output = self.session.get_outputs()[0].name  # serve-app graphs: "probability" [N]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        (result,) = self.session.run([self.output], {self.input: batch})
        return result if result.ndim == 1 else result[:, -1]


def load_models(models_dir: Path) -> dict[str, Model]:
    models = (Model(path) for path in sorted(models_dir.glob("*.onnx")))
    return {model.name: model for model in models}


def _error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type=JSON)


def build_app(models: dict[str, Model]) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(orjson.dumps({"ready": True, "models": len(models)}), media_type=JSON)

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        model = models.get(name)
        if model is None:
            return _error(404, f"model '{name}' is not served")
        try:
            tensor = orjson.loads(await request.body())["inputs"][0]
            batch = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
            return _error(400, "expected one V2 input tensor")
        if batch.ndim != 2 or batch.shape[1] != model.width:
            return _error(422, f"expected shape [N, {model.width}]")
        scores = model.predict(batch)
        answer = {
            "model_name": name,
            "model_version": model.version,
            "outputs": [
                {
                    "name": "probability",
                    "shape": [len(scores)],
                    "datatype": "FP32",
                    "data": scores.tolist(),
                }
            ],
        }
        return Response(orjson.dumps(answer), media_type=JSON)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8340)
    args = parser.parse_args(argv)
    models = load_models(args.models_dir)
    if not models:
        raise SystemExit(f"no .onnx files in {args.models_dir}")
    print(f"fastapi baseline: {len(models)} models loaded", flush=True)
    uvicorn.run(
        build_app(models),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
