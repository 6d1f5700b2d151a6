"""serve-app: multi-model fraud scoring on Ray Serve, with MLflow as the source of truth."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("serve-app")  # the installed distribution's, never a copy
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
