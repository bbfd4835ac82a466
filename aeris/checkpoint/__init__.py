"""aeris.checkpoint: training checkpoints (`files`: one process, `sharded`: a SWiPe mesh,
keyed by global parameter names) and the model weights inference reads from either
(`weights`). Used by training and forecasting alike (docs/checkpoints.md)."""
