"""The streaming session model of a talkrt Triton repository (Python backend), copied there as
``talkrt_session/1/model.py``: one talkrt Session per sequence (correlation id). START opens a
session, each request pushes one audio chunk and returns the frames it completed, END also flushes
the utterance and closes the session. Requests of several sequences that reach an instance
together are rendered in shared batches (talkrt.runtime.batching.SessionBatcher), as `talkrt
serve` does. The pipeline runs in this process on the graph files of the repository (ONNX Runtime,
or the TensorRT engine where the repository has one): the graph models beside it serve clients
that call a graph directly.

Tensors cross the backend through DLPack into torch: the Python backend's ``as_numpy`` reads
wrong values under NumPy 2, which talkrt needs."""

from __future__ import annotations

import json
from pathlib import Path


def _flag(request, name: str) -> bool:
    tensor = _pb.get_input_tensor_by_name(request, name)
    return tensor is not None and bool(_torch(tensor).reshape(-1)[0].item())


def _torch(tensor):
    import torch

    return torch.utils.dlpack.from_dlpack(tensor.to_dlpack())


def _out(name: str, value):
    import torch

    return _pb.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(value.contiguous().unsqueeze(0)))


_pb = None  # triton_python_backend_utils: importable only inside Triton's Python backend stub


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        global _pb
        import triton_python_backend_utils as pb_utils

        from talkrt.runtime.batching import SessionBatcher
        from talkrt.runtime.runs import RunRequest, open_pipeline

        _pb = pb_utils
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        repository = Path(args["model_repository"]).parent
        device = "cpu" if args.get("model_instance_kind") == "CPU" else f"cuda:{args.get('model_instance_device_id', '0')}"
        models = {role: repository / path for role, path in json.loads(params["models"]).items()}
        request = RunRequest(avatar=repository / params["avatar"], renderer=params["renderer"], backend=params["backend"],
                             device=device, fps=params["fps"], batch_size=int(params["batch_size"]))
        self.pipeline = open_pipeline(request, models, profile=False)
        self.batcher = SessionBatcher(self.pipeline)
        self.sample_rate = int(params["sample_rate"])
        self.sessions: dict = {}

    def execute(self, requests: list) -> list:
        import numpy as np
        import torch

        from talkrt.errors import TalkrtError
        from talkrt.runtime.session import Session

        frames: list[list] = [[] for _ in requests]
        errors: list[str | None] = [None] * len(requests)
        pushes, flushes = [], []
        for index, request in enumerate(requests):
            key = request.correlation_id()
            if _flag(request, "START"):
                rate = _pb.get_input_tensor_by_name(request, "SAMPLE_RATE")
                try:
                    self.sessions[key] = Session(self.pipeline, int(_torch(rate).reshape(-1)[0]) if rate is not None else self.sample_rate)
                except TalkrtError as error:
                    errors[index] = str(error)
                    continue
            session = self.sessions.get(key)
            if session is None:
                errors[index] = f"sequence {key} has no session: send its first request with the START flag"
                continue
            audio = _torch(_pb.get_input_tensor_by_name(request, "AUDIO")).reshape(-1).float()
            if len(audio):
                pushes.append((index, session, audio))
            if _flag(request, "END"):
                flushes.append((index, session))
                del self.sessions[key]
        # pushes first, then the flushes of sequences that end here (one session appears once in each step)
        for step in (pushes, [(index, session, None) for index, session in flushes]):
            if not step:
                continue
            for (index, _, _), result in zip(step, self.batcher.step([(session, chunk) for _, session, chunk in step])):
                if isinstance(result, TalkrtError):
                    errors[index] = str(result)
                else:
                    frames[index] += result
        responses = []
        for index, request in enumerate(requests):
            if errors[index] is not None:
                responses.append(_pb.InferenceResponse(output_tensors=[], error=_pb.TritonError(errors[index])))
                continue
            done = frames[index]
            if done:
                images = torch.cat([f.images.cpu() for f in done])
                pts = torch.from_numpy(np.concatenate([f.pts for f in done]))
                audio = torch.from_numpy(np.concatenate([f.audio for f in done]))
                first = done[0].first
            else:
                height, width = self.pipeline.compositor.frames.shape[1:3]
                images, pts, audio, first = torch.zeros((0, height, width, 3), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), torch.zeros(0), -1
            responses.append(_pb.InferenceResponse(output_tensors=[
                _out("FRAMES", images), _out("PTS", pts), _out("FIRST", torch.tensor([first], dtype=torch.int64)), _out("FRAME_AUDIO", audio.float())]))
        return responses

    def finalize(self) -> None:
        self.sessions.clear()
        self.pipeline.close()
