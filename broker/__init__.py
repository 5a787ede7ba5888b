"""Albireo: an astronomical alert broker."""

__version__ = "0.1.0"
