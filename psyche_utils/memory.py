"""Will this fit? A back-of-the-envelope GPU memory estimate for one training process.

Training memory has four parts, and each profile changes a different one:

* **weights**: bytes per parameter of the stored model (fp32 4, bf16 2, NF4 about 0.5 plus its
  scaling constants; bitsandbytes leaves the embeddings and the LM head in bf16);
* **gradients**: one value per *trainable* parameter (all of them, or only LoRA's);
* **optimizer states**: AdamW keeps two moments per trainable parameter (fp32: 8 bytes; 8-bit
  paged AdamW: 2 bytes); a bf16 run under DeepSpeed also keeps an fp32 master copy (4 bytes);
* **activations**: what the forward pass stores for the backward pass, per token and layer;
  gradient checkpointing keeps only each layer's input and recomputes the rest, one layer at a
  time.

ZeRO-3 splits weights, gradients and optimizer states evenly across the processes and gathers
the full weights of about two layers at a time (the one computing and the one prefetched). Assumptions (documented so the numbers can be argued with):
activations are counted as the tensors a Qwen2 layer saves (``7h + 2·kv + 4·I`` values per
token, attention by a fused kernel that stores no ``s x s`` matrix); TRL's SFT loss uses a
fused, chunked LM head, so the ``b x s x vocab`` logits are never held at once; a fixed 1 GiB
covers the CUDA context and 10% is added for allocator fragmentation. Real runs differ by
perhaps 10-20%; the estimate is for choosing a profile, not for packing a GPU to the last byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from psyche_utils.profiles import Profile

GIB = 1024**3
CUDA_CONTEXT_BYTES = 1 * GIB
FRAGMENTATION = 0.10
#: Cards a learner is likely to have, for the "fits on" line.
COMMON_GPUS_GIB = {"24 GB (RTX 4090, A10)": 24, "40 GB (A100-40G)": 40, "48 GB (L40S, A6000)": 48, "80 GB (A100/H100-80G)": 80}
BYTES_PER_PARAM = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "nf4": 0.5 + 0.127 / 8}


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Qwen2-style decoder that memory depends on."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_word_embeddings: bool

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """From a transformers config object or a ``config.json`` dict."""
        get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
        return cls(
            hidden_size=get("hidden_size"),
            intermediate_size=get("intermediate_size"),
            num_layers=get("num_hidden_layers"),
            num_heads=get("num_attention_heads"),
            num_kv_heads=get("num_key_value_heads") or get("num_attention_heads"),
            vocab_size=get("vocab_size"),
            tie_word_embeddings=bool(get("tie_word_embeddings", False)),
        )

    @property
    def kv_size(self) -> int:
        """Width of the key (and of the value) projection: kv heads x head size."""
        return self.num_kv_heads * (self.hidden_size // self.num_heads)

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of every linear layer in one decoder layer: q, k, v, o, gate, up, down."""
        h, kv, inter = self.hidden_size, self.kv_size, self.intermediate_size
        return [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]

    def layer_parameters(self) -> int:
        """One decoder layer: the linear weights, q/k/v biases (Qwen2 has them) and two RMSNorms."""
        weights = sum(fan_in * fan_out for fan_in, fan_out in self.linear_shapes())
        return weights + self.hidden_size + 2 * self.kv_size + 2 * self.hidden_size

    def embedding_parameters(self) -> int:
        """Input embeddings plus the LM head (one matrix when they are tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def parameter_count(self) -> int:
        """All parameters: layers, embeddings/LM head and the final norm."""
        return self.num_layers * self.layer_parameters() + self.embedding_parameters() + self.hidden_size

    def lora_parameters(self, rank: int) -> int:
        """Trainable parameters of LoRA rank ``rank`` on every linear layer (A: in x r, B: r x out)."""
        return self.num_layers * sum(rank * (fan_in + fan_out) for fan_in, fan_out in self.linear_shapes())

    def activation_values_per_token_layer(self) -> int:
        """Values one layer saves per token for the backward pass (see the module docstring)."""
        return 7 * self.hidden_size + 2 * self.kv_size + 4 * self.intermediate_size


#: Qwen/Qwen2.5-7B-Instruct's config.json (7.6B parameters).
QWEN2_5_7B = ModelShape(
    hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28, num_kv_heads=4,
    vocab_size=152064, tie_word_embeddings=False,
)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per training process, by part."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    overhead: float
    trainable_parameters: int
    total_parameters: int

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead

    def rows(self) -> dict[str, float]:
        """Each part in GiB, for a table."""
        parts = {
            "weights": self.weights, "gradients": self.gradients, "optimizer": self.optimizer,
            "activations": self.activations, "overhead": self.overhead, "total": self.total,
        }
        return {name: round(value / GIB, 2) for name, value in parts.items()}

    def fits(self, capacity_gib: float) -> bool:
        return self.total <= capacity_gib * GIB

    def describe(self) -> str:
        """The total and its parts, in GiB."""
        parts = ", ".join(f"{name} {value}" for name, value in self.rows().items() if name != "total")
        return f"Memory estimate per process: {self.total / GIB:.2f} GiB ({parts} GiB)"

    def verdict(self, capacity_gib: float | None = None) -> str:
        """One line: the estimate, and whether it fits ``capacity_gib`` (or which common GPUs it fits)."""
        if capacity_gib is not None:
            return f"{self.describe()}; this GPU has {capacity_gib:.0f} GiB: {'fits' if self.fits(capacity_gib) else 'does NOT fit'}"
        fitting = [name for name, size in COMMON_GPUS_GIB.items() if self.fits(size)]
        return f"{self.describe()}; fits on: {', '.join(fitting) if fitting else 'none of the common single GPUs'}"


def estimate(
    shape: ModelShape,
    *,
    weight_format: str,
    per_device_batch: int,
    seq_len: int,
    gradient_checkpointing: bool,
    num_processes: int = 1,
    zero3: bool = False,
    lora_rank: int | None = None,
    optimizer: str = "adamw",
    compute_bytes: int = 2,
    master_weights: bool = False,
    include_overhead: bool = True,
) -> MemoryEstimate:
    """Estimate one process's training memory (see the module docstring for every assumption).

    ``weight_format``: float32, bfloat16 or nf4. ``optimizer``: "adamw" (two fp32 moments) or
    "adamw_8bit" (two 8-bit moments). ``compute_bytes``: bytes per activation value (2 in
    bf16, 4 in fp32). ``master_weights``: an fp32 copy of the trainable weights (DeepSpeed bf16).
    """
    total_params = shape.parameter_count()
    if weight_format == "nf4":
        # bitsandbytes quantizes the decoder's linear layers only.
        embeddings = shape.embedding_parameters() + shape.hidden_size
        weights = (total_params - embeddings) * BYTES_PER_PARAM["nf4"] + embeddings * BYTES_PER_PARAM["bfloat16"]
    else:
        weights = total_params * BYTES_PER_PARAM[weight_format]

    if lora_rank:
        trainable = shape.lora_parameters(lora_rank)
        weights += trainable * compute_bytes
        gradient_bytes = compute_bytes
    else:
        trainable = total_params
        gradient_bytes = BYTES_PER_PARAM["float32" if weight_format == "float32" else "bfloat16"]
    gradients = trainable * gradient_bytes
    state_bytes = {"adamw": 8.0, "adamw_8bit": 2.0}[optimizer]
    optimizer_bytes = trainable * (state_bytes + (4.0 if master_weights else 0.0))

    if zero3 and num_processes > 1:
        weights, gradients, optimizer_bytes = (part / num_processes for part in (weights, gradients, optimizer_bytes))
        weights += 2 * shape.layer_parameters() * BYTES_PER_PARAM["bfloat16"]  # gathered layers

    tokens = per_device_batch * seq_len
    full_layer = tokens * shape.activation_values_per_token_layer() * compute_bytes
    if gradient_checkpointing:
        activations = shape.num_layers * tokens * shape.hidden_size * compute_bytes + full_layer
    else:
        activations = shape.num_layers * full_layer

    subtotal = weights + gradients + optimizer_bytes + activations
    overhead = CUDA_CONTEXT_BYTES + FRAGMENTATION * subtotal if include_overhead else 0.0
    return MemoryEstimate(
        weights=weights, gradients=gradients, optimizer=optimizer_bytes, activations=activations,
        overhead=overhead, trainable_parameters=trainable, total_parameters=total_params,
    )


def shape_for_profile(profile: Profile) -> ModelShape:
    """The tiny model's shape (read from its config) or Qwen2.5-7B's."""
    if profile.name != "tiny":
        return QWEN2_5_7B
    from psyche_utils.tiny import build_tiny_model

    config = json.loads((build_tiny_model() / "config.json").read_text(encoding="utf-8"))
    return ModelShape.from_config(config)


def estimate_for_profile(
    profile: Profile,
    *,
    per_device_batch: int | None = None,
    seq_len: int | None = None,
    gradient_checkpointing: bool = True,
    num_processes: int | None = None,
    lora: bool | None = None,
    lora_rank: int = 16,
) -> MemoryEstimate:
    """The estimate for a profile's way of training (tiny: fp32 on the CPU, so no CUDA overhead)."""
    use_lora = profile.lora if lora is None else lora
    processes = num_processes or profile.num_processes
    return estimate(
        shape_for_profile(profile),
        weight_format="nf4" if profile.quantization == "nf4" else profile.dtype,
        per_device_batch=per_device_batch or profile.per_device_batch,
        seq_len=seq_len or profile.max_length,
        gradient_checkpointing=gradient_checkpointing,
        num_processes=processes,
        zero3=profile.name == "full",
        lora_rank=lora_rank if use_lora else None,
        optimizer="adamw_8bit" if profile.quantization == "nf4" else "adamw",
        compute_bytes=4 if profile.dtype == "float32" else 2,
        master_weights=profile.name == "full",
        include_overhead=profile.device == "cuda",
    )
