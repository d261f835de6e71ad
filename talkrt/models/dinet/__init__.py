"""DINet (MRzzm/DINet and DINet_optimized): the model with its AdaAT and building blocks, the
feature mapper, the export specs, the avatar preparer (416x320 crops around the nose, 5 fixed
references) and the renderer with its feature sources (precomputed DeepSpeech or HuBERT-ASR CTC)."""
