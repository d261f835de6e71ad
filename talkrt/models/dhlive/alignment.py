"""DH_live's audio features on the video clock: Kaldi fbank frames and the LSTM's 25 Hz steps (see talkrt.runtime.align)."""

from __future__ import annotations

from talkrt.runtime.align import FeatureAlignment

# Kaldi fbank (DH_live): 50 ms frames every 20 ms with snip_edges=False, so frame j
# covers [320j - 240, 320j + 560) with mirrored edges and T = (S + 160) // 320.
FBANK = FeatureAlignment(
    name="fbank",
    hop=320,
    receptive_field=800,
    left_pad=240,
    right_pad=400,
    window=2,
    offset=0,
    padding="edge",
    signal_padding="symmetric",
)

# DH_live: Audio2Feature steps once per two fbank frames (40 ms); step j reads fbank
# frames 2j and 2j+1, i.e. samples [640j - 240, 640j + 880), and (causally) all
# before. interface_wav drops the first 4 outputs, so video frame k shows step
# k + 4; frames past the last step repeat it. T = (S + 160) // 640.
DHLIVE_LSTM = FeatureAlignment(
    name="dhlive_lstm",
    hop=640,
    receptive_field=1120,
    left_pad=240,
    right_pad=400,
    window=1,
    offset=4,
    padding="edge",
    signal_padding="symmetric",
)
