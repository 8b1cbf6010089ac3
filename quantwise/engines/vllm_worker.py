"""Runs inside vLLM's own environment (no quantwise there): loads a checkpoint with vLLM's
loader and kernels and scores token chunks with prompt log-probabilities.

    python vllm_worker.py REQUEST.json  ->  one JSON line on stdout

Request: {"model": dir, "dtype": "bfloat16", "chunks": [[ids...], ...], "first": n}: for each
chunk the log-probability of tokens first+1.. and vLLM's top-1 prediction at each position.
"""

import json
import os
import sys
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # one process: simpler on a 2-core host


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        request = json.load(handle)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    ctx = max(len(c) for c in request["chunks"])
    start = time.perf_counter()
    llm = LLM(model=request["model"], dtype=request.get("dtype", "bfloat16"), enforce_eager=True,
              max_model_len=ctx + 1, gpu_memory_utilization=request.get("memory_fraction", 0.2),
              max_num_seqs=1, seed=0)
    load_s = time.perf_counter() - start
    params = SamplingParams(max_tokens=1, prompt_logprobs=1, temperature=0.0)
    first = request["first"]
    results = []
    for chunk in request["chunks"]:
        out = llm.generate([TokensPrompt(prompt_token_ids=chunk)], params, use_tqdm=False)[0]
        logprobs, top1 = [], []
        for position in range(first + 1, len(chunk)):
            entry = out.prompt_logprobs[position]
            logprobs.append(entry[chunk[position]].logprob)
            top1.append(max(entry.items(), key=lambda kv: kv[1].logprob)[0])
        results.append({"logprobs": logprobs, "top1": top1})
    config = llm.llm_engine.model_config
    print(json.dumps({"results": results, "load_s": load_s, "quantization": config.quantization,
                      "dtype": str(config.dtype)}))


if __name__ == "__main__":
    main()
