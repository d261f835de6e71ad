"""One live session's H.264 encoder ("frames": "h264" in docs/serve.md): libx264 with no delay,
so each frame becomes one Annex-B packet at once, and a keyframe (with its SPS and PPS) where a
decoder may join."""

from __future__ import annotations

import functools
import threading
from fractions import Fraction
from typing import Any

import numpy as np

KEYFRAME_SECONDS = 2.0  # at most this long between keyframes
CRF = "18"  # the quality `talkrt run` writes at (talkrt.runtime.media.VideoWriter)
PRESET = "ultrafast"  # about 1 ms a 256x256 frame on one core: the device thread encodes every session's frames


class H264Stream:
    """Encodes one session's frames in order; ``encode`` on the device thread, ``request_keyframe``
    and ``close`` from any thread. Opened at the first frame (its size is the frames' size, an odd
    width or height padded by one pixel, as `talkrt run` pads them)."""

    def __init__(self, fps: Fraction) -> None:
        self.fps = Fraction(fps)
        self._lock = threading.Lock()  # close may come from the event loop while the device thread encodes
        self._context: Any | None = None
        self._count = 0
        self._key_due = False
        self.closed = False

    def request_keyframe(self) -> None:
        """The next frame is a keyframe: frames before it were dropped, or a new utterance starts."""
        with self._lock:
            self._key_due = True

    def encode(self, images: Any) -> list[tuple[bytes, bool]]:
        """(n, H, W, 3) uint8 BGR, numpy or torch (any device) -> one (packet, is keyframe) per
        frame; nothing once closed (the session has gone)."""
        import av

        if hasattr(images, "cpu"):
            images = images.cpu().numpy()
        images = _even(np.asarray(images))
        out = []
        for image in images:
            frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
            with self._lock:  # one frame at a time: a close waits for one frame at most
                if self.closed:
                    return []
                if self._context is None:
                    self._context = _open(image.shape[1], image.shape[0], self.fps)
                frame.pts = self._count
                if self._key_due:
                    frame.pict_type = av.video.frame.PictureType.I  # an IDR (forced-idr): a decoder may start here
                    self._key_due = False
                packets = self._context.encode(frame)
                self._count += 1
            # zerolatency and no B-frames: each frame comes out at once, so none waits in the encoder
            if len(packets) != 1:
                raise RuntimeError(f"libx264 gave {len(packets)} packets for frame {self._count - 1}; expected 1 (no delay)")
            out.append((bytes(packets[0]), bool(packets[0].is_keyframe)))
        return out

    def close(self) -> None:
        """Free the encoder; waits for a frame being encoded (about a millisecond)."""
        with self._lock:
            self.closed = True
            self._context = None  # its only reference: PyAV frees the x264 encoder here


def _open(width: int, height: int, fps: Fraction):
    import av

    context = av.CodecContext.create("libx264", "w")
    from av.video.reformatter import ColorPrimaries, ColorRange, ColorTrc

    from talkrt.runtime.media import _AVCOL_SPC_SMPTE170M

    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    # libswscale's default conversion is BT.601 limited range: tagged so, as `talkrt run` tags it
    context.color_primaries, context.color_trc = ColorPrimaries.SMPTE170M, ColorTrc.SMPTE170M
    context.colorspace, context.color_range = _AVCOL_SPC_SMPTE170M, ColorRange.MPEG
    context.time_base, context.framerate = 1 / fps, fps
    context.gop_size = max(1, int(KEYFRAME_SECONDS * fps))
    context.max_b_frames = 0
    # zerolatency: no lookahead, sliced threads (no frame delay); SPS/PPS repeat before every
    # keyframe because no global header is asked for
    context.options = {"preset": PRESET, "tune": "zerolatency", "crf": CRF, "forced-idr": "1"}
    context.open()
    return context


def _even(images: np.ndarray) -> np.ndarray:
    """yuv420p needs an even width and height: repeat the last row / column (as `talkrt run` does)."""
    pad_h, pad_w = images.shape[1] % 2, images.shape[2] % 2
    if pad_h or pad_w:
        images = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return images


@functools.lru_cache(maxsize=8)
def codec_string(width: int, height: int, fps: Fraction) -> str:
    """The stream's codec string (``avc1.PPCCLL``: profile, constraint flags and level of
    its SPS), for a WebCodecs VideoDecoder; from one gray frame through the same settings."""
    stream = H264Stream(fps)
    try:
        packet, _ = stream.encode(np.full((1, height, width, 3), 128, np.uint8))[0]
    finally:
        stream.close()
    return "avc1." + sps_of(packet)[1:4].hex().upper()


def sps_of(packet: bytes) -> bytes:
    """The first SPS NAL unit (type 7) of an Annex-B packet, without its start code."""
    for unit in packet.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01"):
        if unit and unit[0] & 0x1F == 7:
            return unit
    raise ValueError("no SPS in the packet")
