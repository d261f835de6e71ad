"""Wav2Lip's audio features on the video clock: the 80 Hz mel windows (see talkrt.runtime.align)."""

from __future__ import annotations

from talkrt.runtime.align import FeatureAlignment

# Wav2Lip: 80 Hz mel from a centred, reflect-padded 800-sample STFT; 16 columns
# starting at int(80 * k / fps); a window past the end becomes the last 16 columns.
WAV2LIP_MEL = FeatureAlignment(
    name="wav2lip_mel",
    hop=200,
    receptive_field=800,
    left_pad=400,
    right_pad=400,
    window=16,
    offset=0,
    padding="shift",
    signal_padding="reflect",
)
