"""Optimizers and learning-rate schedulers with torch.optim's names, math and state dicts."""

from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .checkpoint import state_dict_from_arrays, state_dict_to_arrays
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler",
    "state_dict_to_arrays", "state_dict_from_arrays",
]
