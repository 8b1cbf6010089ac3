"""Runs inside a peer's own environment (no quantwise there), e.g. llm-compressor's: loads a
checkpoint with that environment's transformers (compressed-tensors checkpoints are decompressed
by its compressed-tensors, as the peer's users load them) and scores token chunks.

    python transformers_worker.py REQUEST.json  ->  one JSON line on stdout
"""

import json
import sys
import time


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        request = json.load(handle)
    import torch
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(request["model"], dtype=getattr(torch, request["dtype"])).eval()
    load_s = time.perf_counter() - start
    first = request["first"]
    results = []
    with torch.no_grad():
        for chunk in request["chunks"]:
            ids = torch.tensor([chunk])
            logits = model(ids).logits[0, first:len(chunk) - 1].float()
            logprobs = torch.log_softmax(logits, -1).gather(1, ids[0, first + 1:].unsqueeze(1))[:, 0]
            results.append({"logprobs": logprobs.tolist(), "top1": logits.argmax(-1).tolist()})
    method = getattr(getattr(model.config, "quantization_config", None), "quant_method", None)
    if method is None and isinstance(getattr(model.config, "quantization_config", None), dict):
        method = model.config.quantization_config.get("quant_method")
    print(json.dumps({"results": results, "load_s": load_s, "quantization": str(method) if method else None}))


if __name__ == "__main__":
    main()
