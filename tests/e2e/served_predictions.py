"""The served model answers like the trainer evaluated it: sends the validation split of a
dataset file through tritonclient[http] (binary tensors, batches of 64) to every given version
and checks the accuracy equals the trainer's own val_accuracy, and that all versions agree.
Usage: served_predictions.py HOST:PORT MODEL DATA.h5 VAL_ACCURACY VERSION..."""
import sys

import h5py
import numpy as np
import tritonclient.http as httpclient

url, model, data, expected = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
versions = sys.argv[5:]
with h5py.File(data, "r") as f:
    x = f["/val/x"][...].astype(np.float32)
    y = f["/val/y"][...]
client = httpclient.InferenceServerClient(url=url)
outputs = {}
for v in versions:
    logits = []
    for i in range(0, len(x), 64):
        inp = httpclient.InferInput("input", [len(x[i:i + 64]), x.shape[1]], "FP32")
        inp.set_data_from_numpy(x[i:i + 64], binary_data=True)
        out = httpclient.InferRequestedOutput("logits", binary_data=True)
        result = client.infer(model, [inp], outputs=[out], model_version=v)
        assert result.get_response()["model_version"] == v
        logits.append(result.as_numpy("logits"))
    outputs[v] = np.concatenate(logits)
    accuracy = float((outputs[v].argmax(1) == y).mean())
    print(f"version {v}: {len(x)} validation rows, served accuracy {accuracy:.6f}, trainer's {expected:.6f}")
    assert abs(accuracy - expected) < 1e-9, "served predictions differ from the trainer's evaluation"
for v in versions[1:]:
    assert np.array_equal(outputs[v], outputs[versions[0]]), f"version {v} differs from {versions[0]}"
print("same predictions as the trainer's evaluation")
