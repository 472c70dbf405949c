"""A model of your own: point [model] factory at "custom_model.py:build" (a relative path
is read from the job file's folder, as examples/custom.toml does).

The function receives the job spec and returns a disttrain.nn.Module. Every worker calls
it, so it must build the same architecture everywhere (DDP checks names and shapes).
"""

from disttrain import nn


class ResidualMLP(nn.Module):
    def __init__(self, features: int, hidden: int, classes: int):
        super().__init__()
        self.inp = nn.Linear(features, hidden)
        self.block = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.out = nn.Linear(hidden, classes)

    def forward(self, x):
        h = self.inp(x).relu()
        return self.out(h + self.block(h))


def build(spec):
    return ResidualMLP(features=spec.model.sizes[0], hidden=spec.model.sizes[1],
                       classes=spec.model.sizes[-1])
