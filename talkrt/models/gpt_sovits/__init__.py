"""GPT-SoVITS v2: the GPT (text-to-semantic) and SoVITS (semantic-to-audio) halves."""
