"""VITS (transformers ``VitsModel`` and the original checkpoints): the model, its text front end,
the export graphs and specs, length regulation and the streaming synthesizer."""
