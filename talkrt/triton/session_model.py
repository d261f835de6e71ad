"""The Python-backend models of a talkrt Triton repository, copied there as ``model.py`` of both;
the ``mode`` parameter picks one.

``session`` (``talkrt_session``): one talkrt Session per sequence (correlation id). START opens a
session, each request pushes one audio chunk and returns the frames it completed, END also flushes
the utterance and closes the session. Requests of several sequences that reach an instance
together are rendered in shared batches (talkrt.runtime.batching.SessionBatcher), as `talkrt
serve` does. The pipeline runs in this process on the graph files of the repository (ONNX Runtime,
or the TensorRT engine where the repository has one), for the lowest latency per chunk.

``render`` (``talkrt_render``): offline, one request holds a whole utterance and gets all its
frames. Its pipeline calls the graph models through Triton (BLS: business logic scripting), so
the graphs' own instances, batching and GPUs serve it.

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


def _out(name: str, value, batched: bool):
    """An output tensor; the session model's batch dim (one request, one row) added."""
    import torch

    return _pb.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack((value.unsqueeze(0) if batched else value).contiguous()))


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
        self.mode, self.sample_rate, self.sessions = params["mode"], int(params["sample_rate"]), {}
        if self.mode == "render":
            self.pipeline = _bls_pipeline(params, Path(args["model_repository"]) / args["model_version"], repository, device)
            return
        models = {role: repository / path for role, path in json.loads(params["models"]).items()}
        request = RunRequest(avatar=repository / params["avatar"], renderer=params["renderer"], backend=params["backend"],
                             device=device, fps=params["fps"], batch_size=int(params["batch_size"]))
        self.pipeline = open_pipeline(request, models, profile=False)
        self.batcher = SessionBatcher(self.pipeline)

    def execute(self, requests: list) -> list:
        return self._render(requests) if self.mode == "render" else self._stream(requests)

    def _render(self, requests: list) -> list:
        """Each request a whole utterance: all its frames (the same as a sequence of one request)."""
        from talkrt.errors import TalkrtError
        from talkrt.runtime.session import Session

        responses = []
        for request in requests:
            rate = _pb.get_input_tensor_by_name(request, "SAMPLE_RATE")
            try:
                session = Session(self.pipeline, int(_torch(rate).reshape(-1)[0]) if rate is not None else self.sample_rate)
                frames = session.push(_torch(_pb.get_input_tensor_by_name(request, "AUDIO")).reshape(-1).float()) + session.flush()
            except TalkrtError as error:
                responses.append(_pb.InferenceResponse(output_tensors=[], error=_pb.TritonError(str(error))))
                continue
            responses.append(self._response(frames))
        return responses

    def _stream(self, requests: list) -> list:
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
        return [_pb.InferenceResponse(output_tensors=[], error=_pb.TritonError(error)) if error is not None else self._response(done)
                for error, done in zip(errors, frames)]

    def _response(self, done: list):
        import numpy as np
        import torch

        if done:
            images = torch.cat([f.images.cpu() for f in done])
            pts = torch.from_numpy(np.concatenate([f.pts for f in done]))
            audio = torch.from_numpy(np.concatenate([f.audio for f in done]))
            first = done[0].first
        else:
            height, width = self.pipeline.compositor.frames.shape[1:3]
            images, pts, audio, first = torch.zeros((0, height, width, 3), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), torch.zeros(0), -1
        batched = self.mode == "session"
        return _pb.InferenceResponse(output_tensors=[_out("FRAMES", images, batched), _out("PTS", pts, batched),
                                                     _out("FIRST", torch.tensor([first], dtype=torch.int64), batched), _out("FRAME_AUDIO", audio.float(), batched)])

    def finalize(self) -> None:
        self.sessions.clear()
        self.pipeline.close()


def _bls_pipeline(params: dict, version: Path, repository: Path, device: str):
    """A pipeline whose renderer's graphs run as requests to the repository's graph models."""
    import torch

    from talkrt.engines.runners import GraphIO, Runner
    from talkrt.errors import TalkrtError
    from talkrt.models.family import RendererContext
    from talkrt.models.registry import get_renderer_family
    from talkrt.runtime.avatar import Avatar
    from talkrt.runtime.pipeline import Pipeline, PipelineOptions

    class BLSRunner(Runner):
        """A graph model called from this model: inputs and outputs cross as DLPack tensors."""

        backend = "triton"

        def __init__(self, model: str, io: GraphIO, device: str) -> None:
            super().__init__(device)
            self.model, self.io = model, io

        def _activate(self) -> None:
            pass

        def _deactivate(self) -> None:
            pass

        def _run(self, inputs, outputs):
            outputs = self._check(inputs, outputs)
            request = _pb.InferenceRequest(model_name=self.model, requested_output_names=list(outputs),
                                           inputs=[_pb.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(inputs[name].contiguous())) for name in self.input_names])
            response = request.exec()
            if response.has_error():
                raise TalkrtError(f"graph model {self.model}: {response.error().message()}")
            for name, buffer in outputs.items():
                buffer.copy_(_torch(_pb.get_output_tensor_by_name(response, name)))
            return outputs

    family = get_renderer_family(params["renderer"])
    graphs = json.loads(params["graphs"])  # role -> graph model name; its spec lies beside this file
    runners = {role: BLSRunner(name, GraphIO.from_spec_json(json.loads((version / f"{name}.spec.json").read_text())), device) for role, name in graphs.items()}
    renderer = family.build_renderer(lambda role, **_: runners[role], family.renderer_options(), RendererContext(params["backend"], torch.device(device), dict(graphs)))
    stream = torch.cuda.Stream(device) if device.startswith("cuda") else None
    options = PipelineOptions(fps=params["fps"], batch_size=int(params["batch_size"]), profile=False)
    return Pipeline(Avatar.load(repository / params["avatar"]), renderer, options, stream)
