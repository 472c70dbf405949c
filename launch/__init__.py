"""What the user touches: the CLI, job files, the supervisor, reports and benchmarks."""

from .api import JobFailed, Result, Trainer, train

__all__ = ["JobFailed", "Result", "Trainer", "train"]
