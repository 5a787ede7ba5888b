"""Albireo: an astronomical alert broker."""

from pathlib import Path

__version__ = "0.1.0"

#: the checkout (``schemas/``, ``services/`` and, beside it, ``../shared`` live relative to it).
REPO_ROOT = Path(__file__).resolve().parent.parent
