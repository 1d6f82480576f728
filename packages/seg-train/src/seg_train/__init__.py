"""seg-train: the method-agnostic training engine of seg.

A :class:`Trainer` runs a recipe's ``step(model, batch) -> loss`` function with learning-rate schedules, mixed
precision, gradient accumulation and clipping, atomic checkpoints with exact resume, TensorBoard and rich
progress, and DistributedDataParallel under ``torchrun``. It knows nothing about any segmentation method.
"""

from seg_train.__about__ import __version__
from seg_train.augment import (
    SegAugmentConfig,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    augment_batch,
    augment_pair,
    blur_kernel_size,
    gaussian_blur,
)
from seg_train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_model_weights,
    load_training_state,
    save_checkpoint,
)
from seg_train.data import BatchesFactory, ResumableIndexBatches, move_to_device
from seg_train.distributed import (
    DistributedContext,
    barrier,
    distributed_context,
    init_distributed,
    run_as_forward,
    shard_indices,
    shutdown_distributed,
    unwrap_model,
)
from seg_train.optim import build_optimizer
from seg_train.precision import SlowPrecisionWarning, autocast_dtype, cpu_bf16_is_native, resolve_precision
from seg_train.schedules import cosine_decay, linear_warmup, lr_multiplier, lr_multiplier_fn, poly_decay
from seg_train.seeding import capture_rng_state, deterministic_algorithms, restore_rng_state, seed_everything
from seg_train.trainer import (
    NonFiniteLossError,
    Stateful,
    StepFn,
    StepOutput,
    StepResult,
    Trainer,
    TrainingInterrupted,
    TrainResult,
)

__all__ = [
    "BatchesFactory",
    "DistributedContext",
    "NonFiniteLossError",
    "ResumableIndexBatches",
    "SegAugmentConfig",
    "SlowPrecisionWarning",
    "Stateful",
    "StepFn",
    "StepOutput",
    "StepResult",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "__version__",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "augment_batch",
    "augment_pair",
    "autocast_dtype",
    "barrier",
    "blur_kernel_size",
    "build_optimizer",
    "capture_rng_state",
    "cosine_decay",
    "cpu_bf16_is_native",
    "deterministic_algorithms",
    "distributed_context",
    "gaussian_blur",
    "init_distributed",
    "latest_checkpoint",
    "linear_warmup",
    "list_checkpoints",
    "load_model_weights",
    "load_training_state",
    "lr_multiplier",
    "lr_multiplier_fn",
    "move_to_device",
    "poly_decay",
    "resolve_precision",
    "restore_rng_state",
    "run_as_forward",
    "save_checkpoint",
    "seed_everything",
    "shard_indices",
    "shutdown_distributed",
    "unwrap_model",
]
