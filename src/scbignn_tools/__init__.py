"""scBiGNN cell type annotation for the scverse."""

from importlib.metadata import version

from . import data, graph, model, module, nn, pl, train

__all__ = ["data", "graph", "model", "module", "nn", "pl", "train"]
__version__ = version("scbignn-tools")
