"""The global random generator behind manual_seed, randn, init and dropout."""

from __future__ import annotations

import numpy as np

_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Seed every random draw disttrain makes, as torch.manual_seed."""
    global _rng
    _rng = np.random.default_rng(seed)
    return _rng


def generator() -> np.random.Generator:
    """The generator in use now."""
    return _rng


def get_rng_state() -> dict:
    """A JSON-able snapshot of the generator, for checkpoints."""
    return _rng.bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a snapshot taken by get_rng_state."""
    _rng.bit_generator.state = state
