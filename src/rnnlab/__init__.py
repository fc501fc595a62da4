"""rnnlab: recurrent-neural-network experiments on PyTorch Lightning, driven by Hydra configs."""

__version__ = "0.1.0"

from rnnlab import resolvers as _resolvers

_resolvers.register()
