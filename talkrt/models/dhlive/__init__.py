"""DH_live (kleinlee/DH_live): the five-reference renderer (built on DINet's AdaAT and blocks),
Audio2Feature and the mouth PCA, the export specs, the avatar preparer (256x256 crops, masked
sources, prompt lines, mouth placement, references) and the renderer."""
