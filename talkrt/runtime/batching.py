"""Several live sessions on one pipeline, their frames rendered together.

A render call costs nearly the same for one frame as for a full batch on a GPU, so a
server with many sessions fills each batch with the frames due in all of them: every
session keeps its own state (resampler, feature stream and window, DH_live's LSTM, its
clock and audio), only the renderer's inputs are pooled, and each session gets back
exactly the frames it would have rendered alone. The sessions' feature columns are pooled too:
on a GPU each operator of a session's features is a kernel launch on the one device thread, so
the segments of streams that share their computation are computed in one call per turn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from talkrt.errors import TalkrtError
from talkrt.runtime.pipeline import Audio, DueFrames, Pipeline, Utterance
from talkrt.runtime.session import Frames, Session


class SessionBatcher:
    """Turns of several sessions on one ``pipeline``: ``step`` takes a chunk (or None: flush) for
    each session that has one, renders all their due frames in shared batches, and returns each
    session's frames. ``rows`` / ``slots`` measure how full the batches were."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.rows = 0  # frames rendered
        self.slots = 0  # batch rows offered (batches x batch size)

    @property
    def fill(self) -> float:
        """The share of batch rows that held a frame, over every step so far (1.0 before any)."""
        return self.rows / self.slots if self.slots else 1.0

    def step(self, work: Sequence[tuple[Session, Audio | None]]) -> list[list[Frames] | TalkrtError]:
        """One turn: each session's chunk, or None to flush its utterance. A session whose chunk is
        refused gets the error in place of its frames (and should be closed); the others go on."""
        sessions = [session for session, _ in work]
        if len({id(session) for session in sessions}) != len(sessions):
            raise ValueError("a session may take one chunk per step")
        # Every session's features, the pooled inputs and the frames are made on the pipeline's
        # stream; the caller's stream waits for them before it reads a frame.
        with self.pipeline.handoff():
            return self._step(work)

    def _step(self, work: Sequence[tuple[Session, Audio | None]]) -> list[list[Frames] | TalkrtError]:
        fed: list[DueFrames | Utterance | None | TalkrtError] = []
        for session, chunk in work:
            try:  # a step with columns to compute returns its utterance
                fed.append(session.prepare(chunk, defer_features=True))
            except TalkrtError as error:
                fed.append(error)
        dues = self._features(fed)
        images = iter(self._render([due for due in dues if isinstance(due, DueFrames)]))
        results: list[list[Frames] | TalkrtError] = []
        for (session, chunk), due in zip(work, dues):
            if isinstance(due, TalkrtError):
                results.append(due)
            else:
                results.append(session.complete(due, next(images) if due is not None else None, final=chunk is None))
        return results

    def _features(self, fed: list[DueFrames | Utterance | None | TalkrtError]) -> list[DueFrames | None | TalkrtError]:
        """The steps that stopped at their features, completed: the segments of streams that share
        a compute which takes a batch axis, and have one length, are stacked and computed at once."""
        groups: dict[tuple, list[Utterance]] = {}
        for utterance in (step for step in fed if isinstance(step, Utterance)):
            stream = utterance.features
            key = (stream.compute, len(utterance.segment)) if stream.batched else (id(utterance),)
            groups.setdefault(key, []).append(utterance)
        completed: dict[int, DueFrames | None] = {}
        for group in groups.values():
            compute = group[0].features.compute  # on the pipeline's stream: `step` runs in its handoff
            if len(group) == 1:
                columns = [compute(group[0].segment)]
            else:
                columns = compute(torch.stack([utterance.segment for utterance in group])).unbind(0)
            for utterance, own in zip(group, columns):
                completed[id(utterance)] = utterance.due(own)
        return [completed[id(step)] if isinstance(step, Utterance) else step for step in fed]

    def _render(self, dues: list[DueFrames]) -> tuple[torch.Tensor, ...]:
        if not dues:
            return ()
        rendered = self.pipeline.render_frames(torch.cat([due.avatar_index for due in dues]), torch.cat([due.windows for due in dues]))
        batch = self.pipeline.options.batch_size
        self.rows += len(rendered)
        self.slots += -(-len(rendered) // batch) * batch
        # Each session owns its rows of one tensor that nothing else reuses.
        return torch.split(rendered, [len(due) for due in dues])
