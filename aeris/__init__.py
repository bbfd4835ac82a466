"""AERIS: pixel-level Swin diffusion transformer for global weather forecasting."""

__version__ = "0.1.0"
