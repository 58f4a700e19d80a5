"""rrnet: RRNet stellar labels from LAMOST medium-resolution spectra."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rrnet")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
