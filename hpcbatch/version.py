"""The hpcbatch release: ``hpcbatch.__version__``, the SDK's User-Agent, ``hpcbatch --version``."""

__version__ = "0.1.0"
