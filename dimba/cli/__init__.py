"""The `dimba` command: list, show, plot and export milestone checkpoints; generate text.

Importing this package (and `dimba.cli.main`) loads no torch: `dimba checkpoints list`
reads JSON sidecars only and answers at once even on a machine without torch.
"""
