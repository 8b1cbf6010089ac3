"""GPTQ INT4 g64 on SmolLM2-135M: quantwise against llm-compressor, same model, calibration
(32 x 512 tokens of Emma) and evaluation (Pride and Prejudice, first 20k tokens, window 1024,
stride 512), timed in the same run. llm-compressor refuses g128 on this model (576 = 4.5 x 128).

llm-compressor pins an older transformers, so run this with a virtual environment that has it:
    python3 -m venv --system-site-packages /tmp/llmc && /tmp/llmc/bin/pip install llmcompressor
    /tmp/llmc/bin/python benchmarks/bench_peers.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from quantwise.cache import cache_dir
from quantwise.calibration import CalibrationConfig, load_texts, token_samples
from quantwise.cli.eval_cmd import eval_tokens
from quantwise.evaluation.perplexity import perplexity
from quantwise.models.tokenizer import load_text_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=20000)
    args = parser.parse_args()
    model_dir = str(cache_dir("models") / "smollm2-135m")
    text = cache_dir("text") / "austen"
    tokenizer = load_text_tokenizer(model_dir)
    calib = token_samples(tokenizer, load_texts([str(text / "emma.txt")]), args.samples, args.seq_len, 0)
    ids, bos, _ = eval_tokens(model_dir, str(text / "prideprejudice.txt"), args.eval_tokens)
    results = {}

    start = time.perf_counter()
    model = _llmcompressor_gptq(model_dir, calib)
    results["llm-compressor"] = {"seconds": time.perf_counter() - start,
                                 "ppl": perplexity(model, ids, 1024, 512, bos).perplexity}
    del model

    import quantwise
    from quantwise.methods import build_method
    from quantwise.pipeline.sequential import QuantizeJob, run_quantize

    with tempfile.TemporaryDirectory() as tmp:
        config = CalibrationConfig((str(text / "emma.txt"),), args.samples, args.seq_len, 0)
        start = time.perf_counter()
        run_quantize(QuantizeJob("smollm2-135m", "gptq", build_method("gptq", "int4-g64"), config, Path(tmp) / "q"))
        seconds = time.perf_counter() - start
        model = quantwise.load(Path(tmp) / "q", kernels=False)
        results["quantwise"] = {"seconds": seconds, "ppl": perplexity(model, ids, 1024, 512, bos).perplexity}
    results["fp32"] = {"ppl": perplexity(AutoModelForCausalLM.from_pretrained(model_dir), ids, 1024, 512,
                                        bos).perplexity}
    ours, theirs = results["quantwise"], results["llm-compressor"]
    print(json.dumps(results, indent=2))
    print(f"quantwise / llm-compressor: time {ours['seconds'] / theirs['seconds']:.2f}x, "
          f"perplexity {ours['ppl'] / theirs['ppl']:.3f}x (fp32 {results['fp32']['ppl']:.2f})")


def _llmcompressor_gptq(model_dir: str, calib: torch.Tensor):
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    dataset = Dataset.from_dict({"input_ids": calib.tolist(), "attention_mask": torch.ones_like(calib).tolist()})
    scheme = {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "symmetric": True,
                                                             "strategy": "group", "group_size": 64}}}
    recipe = GPTQModifier(config_groups=scheme, ignore=["lm_head"], dampening_frac=0.01, block_size=128)
    oneshot(model=model, dataset=dataset, recipe=recipe, max_seq_length=calib.shape[1],
            num_calibration_samples=calib.shape[0])
    return model.eval()


if __name__ == "__main__":
    main()
