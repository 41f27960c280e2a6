"""scBiGNN cell type annotation for the scverse."""

from importlib.metadata import version

from . import model, module, nn

__all__ = ["model", "module", "nn"]
__version__ = version("scbignn-tools")
