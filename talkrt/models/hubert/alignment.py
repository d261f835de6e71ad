"""HuBERT's and Wav2Vec2's feature frames on the video clock (see talkrt.runtime.align)."""

from __future__ import annotations

import dataclasses

from talkrt.runtime.align import FeatureAlignment

# HuBERT / Wav2Vec2: conv front-end of receptive field 400, stride 320, no padding,
# so T = (S - 400) // 320 + 1; two feature frames per 25 fps frame. The transformer
# sees whatever chunk it is given.
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
)
WAV2VEC2 = dataclasses.replace(HUBERT, name="wav2vec2")
