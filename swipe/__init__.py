"""SWiPe: sequence, window and pipeline parallelism for window transformers.

Knows nothing about weather: it parallelises any non-hierarchical window transformer
over a 2-D token grid. Never imports `aeris`.
"""

__version__ = "0.1.0"
