"""Few-shot segmentation of medical scans (PANet-style prototypes), usable from napari,
the command line and scripts.

Importing this package imports neither torch, napari nor Qt; the heavy parts load on first use.
"""

__version__ = "0.1.0"

from .errors import FewShotError  # noqa: E402

__all__ = ["FewShotError", "__version__"]
