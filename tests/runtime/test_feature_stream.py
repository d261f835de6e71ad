"""FeatureWindow cuts the windows `window_indices` and `gather_windows` give, whether it slices
(windows inside the columns) or gathers (windows clamped at either end)."""

from __future__ import annotations

import pytest
import torch

from talkrt.models.dinet.alignment import DEEPSPEECH
from talkrt.models.wav2lip.alignment import WAV2LIP_MEL
from talkrt.runtime.align import gather_windows, num_video_frames
from talkrt.runtime.feature_stream import FeatureWindow


@pytest.mark.parametrize("alignment", [WAV2LIP_MEL, DEEPSPEECH], ids=lambda a: a.padding)
@pytest.mark.parametrize("total", [3, 40, 203])
def test_windows_equal_the_offline_gather(alignment, total) -> None:
    columns = torch.randn(6, total, generator=torch.Generator().manual_seed(total))
    frames = num_video_frames(total * alignment.hop, 25, alignment.sample_rate)
    for first in range(0, frames, 3):
        window = FeatureWindow(alignment, 25, alignment.sample_rate)
        window.append(columns)
        window.forget_before(first)  # windows cut past the first columns, as a stream does
        for stop in range(first, frames + 1, 2):
            expected = gather_windows(columns, alignment.window_indices(total, stop, 25, None, first))
            assert torch.equal(window.windows(first, stop, total), expected), (first, stop)
