"""Everything a training worker needs, as one plain serialisable record (Ray ships it to each worker)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

OPTIMIZERS = ("adamw", "adamw_fused", "adamw8bit")  # see train/optim.py


@dataclass
class TrainConfig:
    model_dir: str
    cache_dir: str
    steps: int
    learning_rate: float
    rank: int
    lora_targets: list[str]
    conditions: dict = field(default_factory=dict)  # the bound recipe's ConditionSet as JSON
    seed: int = 42
    batch_size: int = 1  # per worker
    max_grad_norm: float = 1.0
    weight_decay: float = 0.01
    warmup_steps: int = 0  # default: min(100, 5% of steps), see `resolved_warmup`
    final_lr_fraction: float = 0.1
    gradient_checkpointing: bool | None = None  # None: on for GPU, off for CPU (tiny models gain nothing)
    mixed_precision: bool | None = None  # None: bf16 on GPU, fp32 on CPU
    log_every: int = 10
    metrics_path: str | None = None  # rank 0 appends one JSON line per logged step
    probe_sigmas: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    validation: list[dict] = field(default_factory=list)  # ValidationItem dicts
    validation_every: int = 0  # 0: a quarter of the run (previews at 25/50/75/100 %)
    progress: bool = True  # tqdm bar with step, loss and ETA on rank 0
    training_mode: str = "lora"  # "lora" | "full" (all transformer weights trained)
    checkpoint_every: int = 0  # 0: no intermediate checkpoints; Ray Train keeps the latest for restarts
    max_shard_bytes: int = 5 * 1024**3  # full fine-tunes: the largest safetensors file written
    stream: bool = False  # streaming mode: train on the encoded windows as they come (train/stream_data.py)
    init_lora: str | None = None  # normalised LoRA (peft keys) the adapters start from; a path or storage URI
    fail_at_step: int | None = None  # test hook: the last rank's process exits at this step (first attempt only)
    # memory levers (train/optim.py)
    optimizer: str = "adamw"  # "adamw" | "adamw_fused" | "adamw8bit" (bitsandbytes)
    activation_checkpoint_every: int = 0  # k >= 1: recompute every k-th block (overrides gradient_checkpointing)
    lora_dtype: str = "fp32"  # "bf16": adapters stored in bf16, AdamW on fp32 masters + moments

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lora_dtype not in ("fp32", "bf16"):
            raise ValueError(f"lora_dtype must be 'fp32' or 'bf16', got {self.lora_dtype!r}")
        if self.lora_dtype == "bf16" and self.optimizer == "adamw8bit":
            raise ValueError("lora_dtype 'bf16' keeps fp32 masters in AdamW state: use adamw or adamw_fused")
        if self.activation_checkpoint_every < 0:
            raise ValueError("activation_checkpoint_every must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**d)

    @property
    def resolved_validation_every(self) -> int:
        return self.validation_every or max(1, self.steps // 4)

    @property
    def resolved_warmup(self) -> int:
        return self.warmup_steps or min(100, self.steps // 20)
