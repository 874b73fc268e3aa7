"""Helpers for the Psyche-R1 tutorial.

The notebooks teach; this package does the work. Submodules are imported on demand so that
`import psyche_utils` stays fast and light (no torch import for data-only steps).
"""

__version__ = "0.1.0"
