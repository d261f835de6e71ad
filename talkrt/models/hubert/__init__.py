"""HuBERT / Wav2Vec2 speech encoders and HuBERT CTC (hubert-asr), through transformers: the model,
its strict checkpoint readers and presets (model), and the export specs (specs)."""
