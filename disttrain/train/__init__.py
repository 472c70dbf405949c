"""Jobs: the spec, the builders, the per-step loop and checkpoints."""

from .checkpoint import (
    CheckpointError,
    TrainState,
    latest_valid_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .loop import Trainer
from .runner import run_rank
from .spec import JobSpec, SpecError, spec_from_dict

__all__ = ["CheckpointError", "JobSpec", "SpecError", "TrainState", "Trainer",
           "latest_valid_checkpoint", "load_checkpoint", "run_rank", "save_checkpoint",
           "spec_from_dict"]
