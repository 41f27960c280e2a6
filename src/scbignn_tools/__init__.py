"""scBiGNN cell type annotation for the scverse."""

from importlib.metadata import version

from . import model, module, nn, pl

__all__ = ["model", "module", "nn", "pl"]
__version__ = version("scbignn-tools")
