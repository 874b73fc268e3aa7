#!/bin/bash
# Serve a teacher model through vLLM's OpenAI-compatible API for notebooks 01-02 at full scale.
#
#   scripts/serve_teacher.sh Qwen/Qwen2.5-72B-Instruct 8      # model id, tensor-parallel GPUs
#
# then, in the shell that runs the notebooks:
#   export PSYCHE_TEACHER_URL=http://HOST:8000/v1 PSYCHE_TEACHER_MODEL=Qwen/Qwen2.5-72B-Instruct
#   export PSYCHE_TEACHER_CONCURRENCY=64
#
# --generation-config vllm: vLLM's neutral defaults, not the checkpoint's generation_config.json
# (the client sends every sampling field anyway). The served name is the model id, which the
# cache key includes, so replies from different teachers never mix.
set -euo pipefail
MODEL=${1:?usage: scripts/serve_teacher.sh MODEL_ID [TENSOR_PARALLEL_GPUS] [PORT]}
TP=${2:-1}
PORT=${3:-8000}
exec vllm serve "$MODEL" \
    --tensor-parallel-size "$TP" \
    --port "$PORT" \
    --max-model-len 8192 \
    --max-num-seqs 256 \
    --generation-config vllm \
    --served-model-name "$MODEL"
