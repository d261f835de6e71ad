"""How far features streamed on a sliding context stray from the whole-utterance features.

Features that see their whole input (HuBERT's attention, an utterance normalisation)
stream only approximately (talkrt.runtime.align.SlidingContext). This module measures
the cost of a context: the cosine of every streamed feature frame against the same
frame computed on the whole utterance, and picks the smallest context whose frames all
pass a gate. ``perf/bench_context.py`` runs it over several contexts and carries the
comparison on to the renderer's faces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from talkrt.runtime.align import FeatureAlignment, SlidingContext
from talkrt.runtime.feature_stream import SlidingContextFeatures

Features = Callable[[torch.Tensor], torch.Tensor]  # 16 kHz samples -> (C, T) columns


def streamed_features(features: Features, alignment: FeatureAlignment, wav16k: torch.Tensor, chunk: int) -> torch.Tensor:
    """The columns a stream of ``chunk``-sample pieces of ``wav16k`` yields on ``alignment``'s context."""
    stream = SlidingContextFeatures(features, alignment)
    pieces = [stream.push(wav16k[start : start + chunk]) for start in range(0, len(wav16k), chunk)]
    pieces.append(stream.finish())
    return torch.cat([piece for piece in pieces if piece.numel()], dim=-1)


def frame_cosines(reference: torch.Tensor, actual: torch.Tensor) -> np.ndarray:
    """Cosine of every feature frame (column) of ``actual`` against ``reference``, both (C, T),
    as the precision gates measure it (1 where both frames are ~0)."""
    from talkrt.precision.gates import row_cosines

    if reference.shape != actual.shape:
        raise ValueError(f"the streamed features are {tuple(actual.shape)}, the whole utterance's {tuple(reference.shape)}")
    return row_cosines(reference.T.double().cpu().numpy(), actual.T.double().cpu().numpy())


@dataclass(frozen=True)
class ContextDeviation:
    """One context's streamed features, and the cosine of each frame against the whole utterance's."""

    context: SlidingContext
    streamed: torch.Tensor
    cosines: np.ndarray

    @property
    def min_cosine(self) -> float:
        return float(self.cosines.min(initial=1.0))

    @property
    def mean_cosine(self) -> float:
        return float(self.cosines.mean()) if self.cosines.size else 1.0

    def worst_frames(self, count: int) -> np.ndarray:
        """The ``count`` feature frames that stray the most, in time order."""
        return np.sort(np.argsort(self.cosines, kind="stable")[:count])


def measure_contexts(features: Features, alignment: FeatureAlignment, wav16k: torch.Tensor,
                     contexts: Iterable[SlidingContext], chunk: int = 640) -> tuple[torch.Tensor, list[ContextDeviation]]:
    """The whole-utterance features, and each context's deviation from them."""
    whole = features(wav16k)
    deviations = []
    for context in contexts:
        streamed = streamed_features(features, dataclasses.replace(alignment, context=context), wav16k, chunk)
        deviations.append(ContextDeviation(context, streamed, frame_cosines(whole, streamed)))
    return whole, deviations


def context_size(context: SlidingContext) -> tuple[int, int, int]:
    """The order in which contexts count as smaller: audio per window first, then latency."""
    return (context.left + context.lookahead, context.lookahead, context.step)


def smallest_passing(candidates: Iterable[tuple[SlidingContext, bool]]) -> SlidingContext | None:
    """The smallest context that passed (see ``context_size``), or None."""
    passing = [context for context, passed in candidates if passed]
    return min(passing, key=context_size) if passing else None
