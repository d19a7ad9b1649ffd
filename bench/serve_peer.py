"""The peer of bench/serve_bench.sh: a tern export served by FastAPI + uvicorn with numpy.

  PEER_MODEL=run/model.h5 PEER_MODEL_NAME=digits OPENBLAS_NUM_THREADS=1 \
    uvicorn --app-dir bench serve_peer:app --workers 2 --port 8001

The forward pass is the export's: standard normalisation (x - mean) / std in float32 (a std
under 1e-12 divides by 1, as tern does), then the layers of `model_spec` read from
/layers/<i>.<type>/weight|bias: linear is y = x W^T + b, relu, dropout is the identity at
inference. It speaks the KServe v2 JSON infer request and response (no binary tensors), parsed
and written with orjson, with the body read raw (no pydantic model), which is FastAPI's fastest
path. One model, one version ("1").
"""
import json
import os

import h5py
import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response


def load(path):
    with h5py.File(path, "r") as f:
        spec = json.loads(f.attrs["model_spec"])
        norm = json.loads(f.attrs["normalization"])
        schema = json.loads(f.attrs["input_schema"])
        outputs = json.loads(f.attrs["outputs"])
        layers = []
        for i, text in enumerate(spec["layers"]):
            kind = text.split()[0]
            if kind == "linear":
                g = f[f"layers/{i}.linear"]
                w = np.asarray(g["weight"][...], dtype=np.float32)
                b = np.asarray(g["bias"][...], dtype=np.float32)
                layers.append(("linear", np.ascontiguousarray(w.T), b))
            elif kind == "relu":
                layers.append(("relu",))
            elif kind == "dropout":
                pass  # identity at inference
            else:
                raise ValueError(f"{path}: layer '{text}' is not supported by the peer")
    features = int(np.prod(schema["shape"]))
    if norm.get("kind") == "standard":
        mean = np.asarray(norm["mean"], dtype=np.float32)
        sd = np.asarray(norm["std"], dtype=np.float64)
        inv = np.where(sd > 1e-12, 1.0 / np.where(sd > 1e-12, sd, 1.0), 1.0).astype(np.float32)
    else:
        mean, inv = None, None
    return {"layers": layers, "mean": mean, "inv": inv, "features": features,
            "input": schema["name"], "output": outputs[0]["name"]}


MODEL = load(os.environ["PEER_MODEL"])
NAME = os.environ.get("PEER_MODEL_NAME", "digits")


def forward(x):
    if MODEL["mean"] is not None:
        x = (x - MODEL["mean"]) * MODEL["inv"]
    for layer in MODEL["layers"]:
        if layer[0] == "linear":
            x = x @ layer[1] + layer[2]
        else:
            x = np.maximum(x, 0.0)
    return x


app = FastAPI()


def error(code, text):
    return Response(orjson.dumps({"error": text}), status_code=code, media_type="application/json")


@app.get("/v2/health/ready")
async def ready():
    return Response(b"", status_code=200)


@app.post("/v2/models/{name}/infer")
@app.post("/v2/models/{name}/versions/{version}/infer")
async def infer(name: str, request: Request, version: str = "1"):
    if name != NAME or version != "1":
        return error(404, f"unknown model '{name}' version {version}")
    try:
        req = orjson.loads(await request.body())
        inp = req["inputs"][0]
        if inp["name"] != MODEL["input"]:
            return error(400, f"unknown input '{inp['name']}'")
        if inp["datatype"] not in ("FP32", "FP64", "INT32", "INT64"):
            return error(400, f"input '{inp['name']}': datatype '{inp['datatype']}'")
        shape = inp["shape"]
        rows = int(shape[0])
        x = np.asarray(inp["data"], dtype=np.float32).reshape(rows, MODEL["features"])
    except (KeyError, IndexError, TypeError, ValueError, orjson.JSONDecodeError) as e:
        return error(400, f"bad request: {e}")
    y = forward(x)
    out = {"model_name": NAME, "model_version": "1",
           "outputs": [{"name": MODEL["output"], "datatype": "FP32", "shape": list(y.shape),
                        "data": y.ravel().tolist()}]}
    if "id" in req:
        out = {"model_name": NAME, "model_version": "1", "id": req["id"],
               "outputs": out["outputs"]}
    return Response(orjson.dumps(out), media_type="application/json")
