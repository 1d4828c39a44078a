"""The baseline: a plain FastAPI + onnxruntime app, the way most tutorials write one.

One process, one shared session (onnxruntime's default threads), one synchronous inference per
request on the event loop; the same decoding as convscope's model input (Pillow open -> "L" ->
28x28 -> numpy) and the same answer (top-5 labels). Multipart field ``file`` or the raw body.

    .venv/bin/python benchmarks/plain_fastapi.py [--port 8001] [--model PATH/model.onnx]
"""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request
from PIL import Image


def create_app(model: str) -> FastAPI:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    labels = json.loads(session.get_modelmeta().custom_metadata_map["labels"])
    app = FastAPI()

    @app.get("/readyz")
    async def ready() -> dict:
        return {"status": "ready"}

    @app.post("/classify")
    async def classify(request: Request) -> dict:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            data = await form["file"].read()  # type: ignore[union-attr]
        else:
            data = await request.body()
        image = Image.open(io.BytesIO(data)).convert("L").resize((28, 28))
        pixels = np.asarray(image, dtype=np.uint8)[None, :, :, None]
        probs = session.run(["probabilities"], {"image": pixels})[0][0]
        top = np.argsort(-probs)[:5]
        return {"predictions": [{"label": labels[i], "probability": float(probs[i])} for i in top]}

    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--model", default="models/fashion-mnist/model.onnx")
    args = ap.parse_args()
    uvicorn.run(create_app(args.model), host=args.host, port=args.port, log_level="warning")
