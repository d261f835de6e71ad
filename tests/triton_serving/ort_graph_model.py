"""A test stand-in for a graph model on this CPU machine, whose Triton (the nvidia-pytriton wheel)
has no ONNX Runtime backend: the same ONNX file served by the Python backend through talkrt's ORT
runner, so that `talkrt_render`'s BLS requests reach a real graph model."""

from pathlib import Path


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        from talkrt.engines.runners import make_runner

        self.runner = make_runner("ort", Path(args["model_repository"]) / args["model_version"] / "model.onnx", device="cpu")

    def execute(self, requests: list) -> list:
        import torch
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            inputs = {name: torch.utils.dlpack.from_dlpack(pb_utils.get_input_tensor_by_name(request, name).to_dlpack()).clone() for name in self.runner.input_names}
            outputs = self.runner.run(inputs)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(value.contiguous())) for name, value in outputs.items()]))
        return responses
