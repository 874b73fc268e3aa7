"""Training entry points shared by the notebooks and ``accelerate launch``.

``python -m psyche_utils.train sft --config configs/sft/tiny_cpu.yaml [--key value ...]`` runs in one
process; ``accelerate launch --config_file configs/accelerate/zero3_8gpu.yaml -m psyche_utils.train sft
--config configs/sft/full_8gpu.yaml`` runs the very same code on eight GPUs. GRPO takes the same
command line (``... grpo --config configs/grpo/<recipe>.yaml``). Recipes are flat YAML files read by
TRL's parser (``psyche_utils.train.common``).
"""
