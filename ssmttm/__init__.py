"""ssmttm: an open, reproducible pipeline for text-to-music generation with state-space models.

Importing the package is cheap: no torch, no model libraries, no network. Heavy libraries are
imported inside the functions that need them.
"""

__version__ = "0.1.0"
