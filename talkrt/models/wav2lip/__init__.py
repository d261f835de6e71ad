"""Wav2Lip: the 96x96 generator, key for key compatible with the official checkpoints (model), its
export spec (specs), the weightless mel front end as a graph (mel) and the renderer (renderer)."""
