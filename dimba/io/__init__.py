"""Checkpoints on disk: reading any of them, loading a model or a training state from one,
writing milestone checkpoints (the one writer), exporting weights.

Sits above the model and growth layers (loading grows a model to the recorded shape) and
below training (both trainers write through `dimba.io.writer`).
"""
