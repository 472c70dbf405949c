"""Optimizers and learning-rate schedulers with torch.optim's names, math and state dicts."""

from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .checkpoint import state_dict_from_arrays, state_dict_to_arrays
from .nadam import NAdam
from .optimizer import Optimizer
from .radam import RAdam
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam",
    "lr_scheduler", "state_dict_to_arrays", "state_dict_from_arrays",
]
