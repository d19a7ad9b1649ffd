"""Checks tern-serve with Triton's own client, tritonclient[http]: health, metadata, config,
JSON and binary tensors in both directions, classification, and a 400 surfaced as an error.
Usage: tritonclient_check.py HOST:PORT (a server with the e2e repository's model "mlp")."""
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

client = httpclient.InferenceServerClient(url=sys.argv[1])
assert client.is_server_live() and client.is_server_ready()
assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1")
assert client.get_server_metadata()["name"] == "tern"
meta = client.get_model_metadata("mlp")
assert meta["inputs"][0]["name"] == "input" and meta["inputs"][0]["shape"] == [-1, 4], meta
assert client.get_model_config("mlp")["max_batch_size"] == 8

x = np.array([[1, 2, 3, 4], [0.5, 0.25, 0, -1]], dtype=np.float32)
answers = []
for binary_in in (False, True):
    for binary_out in (False, True):
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary_in)
        out = httpclient.InferRequestedOutput("logits", binary_data=binary_out)
        result = client.infer("mlp", [inp], outputs=[out], model_version="1", request_id="t1")
        assert result.get_response()["model_version"] == "1"
        assert result.get_response()["id"] == "t1"
        answers.append(result.as_numpy("logits"))
assert all(a.shape == (2, 3) and np.allclose(a, answers[0]) for a in answers), answers

inp = httpclient.InferInput("input", list(x.shape), "FP32")
inp.set_data_from_numpy(x)
top = client.infer("mlp", [inp], model_version="1",
                   outputs=[httpclient.InferRequestedOutput("logits", class_count=2)])
best = top.as_numpy("logits")
assert best.shape == (2, 2), best
assert int(best[0][0].decode().split(":")[1]) == int(np.argmax(answers[0][0]))

try:
    bad = httpclient.InferInput("input", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
    client.infer("mlp", [bad])
    raise SystemExit("a wrong shape was accepted")
except InferenceServerException as e:
    assert "shape [1,3]" in str(e), e

stats = client.get_inference_statistics("mlp", "1")["model_stats"][0]
assert stats["inference_stats"]["success"]["count"] >= 5, stats
print("ok: health, metadata, config, JSON/binary x JSON/binary, classification, errors, stats")
