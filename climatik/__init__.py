"""Climatik keeps LLM inference on Kubernetes inside power, thermal and carbon budgets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("climatik")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
