"""HuBERT's and Wav2Vec2's feature frames on the video clock (see talkrt.runtime.align)."""

from __future__ import annotations

import dataclasses

from talkrt.runtime.align import FeatureAlignment, SlidingContext

# A transformer attends to its whole input, so its features stream only on a sliding
# window (2 s of history, 200 ms steps, 80 ms of lookahead): the deviation from the
# whole-utterance features is measured by perf/bench_context.py (perf/RESULTS.md).
CONTEXT_MS = {"left_ms": 2000, "step_ms": 200, "lookahead_ms": 80}

# HuBERT / Wav2Vec2: conv front-end of receptive field 400, stride 320, no padding,
# so T = (S - 400) // 320 + 1; two feature frames per 25 fps frame.
HUBERT = FeatureAlignment(
    name="hubert",
    hop=320,
    receptive_field=400,
    left_pad=0,
    right_pad=0,
    window=2,
    offset=0,
    padding="edge",
    signal_padding="none",
    streamable=False,
    context=SlidingContext.of_ms(hop=320, **CONTEXT_MS),
)
WAV2VEC2 = dataclasses.replace(HUBERT, name="wav2vec2")
