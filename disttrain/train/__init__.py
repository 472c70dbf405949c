"""Jobs: the spec, the builders, the per-step loop and checkpoints."""

from .checkpoint import (
    CheckpointError,
    latest_valid_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .loop import Trainer
from .spec import JobSpec, SpecError, spec_from_dict

__all__ = ["CheckpointError", "JobSpec", "SpecError", "Trainer", "latest_valid_checkpoint",
           "load_checkpoint", "save_checkpoint", "spec_from_dict"]
