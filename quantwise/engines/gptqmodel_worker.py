"""Runs inside GPTQModel's own environment (no quantwise there): loads a GPTQ or AWQ checkpoint
with GPTQModel's loader and torch kernel and scores token chunks.

    python gptqmodel_worker.py REQUEST.json  ->  one JSON line on stdout
"""

import json
import sys
import time


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        request = json.load(handle)
    import torch
    from gptqmodel import BACKEND, GPTQModel

    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    dtype = getattr(torch, request.get("dtype", "float16"))
    model = GPTQModel.load(request["model"], device="cpu", backend=BACKEND.TORCH, dtype=dtype)
    load_s = time.perf_counter() - start
    first = request["first"]
    results = []
    with torch.no_grad():
        for chunk in request["chunks"]:
            ids = torch.tensor([chunk])
            logits = model.model(ids).logits[0, first:len(chunk) - 1].float()
            logprobs = torch.log_softmax(logits, -1).gather(1, ids[0, first + 1:].unsqueeze(1))[:, 0]
            results.append({"logprobs": logprobs.tolist(), "top1": logits.argmax(-1).tolist()})
    method = getattr(getattr(model, "quantize_config", None), "quant_method", None)
    print(json.dumps({"results": results, "load_s": load_s, "quantization": str(method) if method else None}))


if __name__ == "__main__":
    main()
