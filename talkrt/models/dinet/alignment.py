"""DINet's audio features on the video clock: DeepSpeech windows, or HuBERT-ASR emissions mapped to them (see talkrt.runtime.align)."""

from __future__ import annotations

from talkrt.models.dinet.asr import context_ms
from talkrt.runtime.align import FeatureAlignment, SlidingContext

# DeepSpeech (DINet): 25 Hz logits = every 4th 10 ms MFCC frame with +-9 zero-padded
# 20 ms context steps, giving T = (S + 399) // 640. A BiRNN over the utterance and
# whole-utterance normalisation make it non-streamable; python_speech_features
# zero-pads a signal shorter than one 25 ms window to one frame. Output frame t uses
# DeepSpeech frames t-2..t+2 with edge padding (np.pad(..., 2, mode="edge")).
DEEPSPEECH = FeatureAlignment(
    name="deepspeech",
    hop=640,
    receptive_field=6160,
    left_pad=2880,
    right_pad=3039,
    window=5,
    offset=-2,
    padding="edge",
    signal_padding="zeros",
    streamable=False,
    min_frames=1,
)

# DINet_optimized: HuBERT-ASR CTC emissions taken every second frame (25 Hz), mapped
# to DeepSpeech-like features; frame j reads samples [640j, 640j + 400). The
# transformer and the utterance normalisation see their whole input, so a stream
# computes them on HuBERT's sliding context. DINet's window: frames t-2..t+2, edge padded.
CTC_25HZ = FeatureAlignment(
    name="ctc_25hz",
    hop=640,
    receptive_field=400,
    left_pad=0,
    right_pad=0,
    window=5,
    offset=-2,
    padding="edge",
    signal_padding="none",
    streamable=False,
    context=SlidingContext.of_ms(hop=640, **context_ms()),
)
