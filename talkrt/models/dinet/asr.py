"""DINet_optimized's speech recognizer is the hubert family's HuBERT-ASR graph: what DINet
uses of it (the graph, its presets, its streaming context, the feature it yields) is named here
once, so the rest of the package depends on the hubert family through this module only."""

from __future__ import annotations

ASR_GRAPH = "hubert-asr"
TRAINED_PRESET = "hubert-large-ls960-ft"  # the checkpoint DINet_optimized's mapper was trained on
TEST_PRESET = "tiny-hubert-asr"  # random weights, small: tests and demos without a checkpoint
SOURCE_FEATURE = "hubert-asr-large-25hz-29"


def context_ms() -> dict[str, int]:
    """HuBERT's sliding context (history, step, lookahead) that DINet's streamed features use;
    imported here, not at the top, so that the family's description loads without torch."""
    from talkrt.models.hubert.alignment import CONTEXT_MS

    return CONTEXT_MS
