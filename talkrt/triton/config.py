"""Triton ``config.pbtxt`` text for a talkrt graph (from the spec stored in its ONNX file) and for
the streaming session model. Written as text so that nothing here needs tritonclient; the tests
parse every file with Triton's own ModelConfig protobuf."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from talkrt.errors import TalkrtError
from talkrt.export.spec import StoredSpec, TensorSpec

# talkrt dtype names (TensorSpec.dtype) -> Triton's DataType names.
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int64": "TYPE_INT64",
                 "int32": "TYPE_INT32", "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8"}
SESSION_MODEL = "talkrt_session"
RENDER_MODEL = "talkrt_render"


def batch_dim(spec: StoredSpec) -> str | None:
    """The dim every input and output leads with, which Triton may batch on; None where none does."""
    leading = {tensor.shape[0] if tensor.shape else None for tensor in (*spec.inputs, *spec.outputs)}
    if len(leading) == 1:
        (name,) = leading
        if isinstance(name, str) and spec.dims.get(name, (1,))[0] == 1:
            return name
    return None


def _dims(tensor: TensorSpec, batched: bool) -> str:
    shape = tensor.shape[1:] if batched else tensor.shape
    return ", ".join("-1" if isinstance(size, str) else str(size) for size in shape)


def _tensors(key: str, tensors: Sequence[TensorSpec], batched: bool) -> str:
    entries = []
    for tensor in tensors:
        if tensor.dtype not in TRITON_DTYPES:
            raise TalkrtError(f"tensor {tensor.name} has dtype {tensor.dtype}, which talkrt cannot describe to Triton")
        entries.append(f'  {{\n    name: "{tensor.name}"\n    data_type: {TRITON_DTYPES[tensor.dtype]}\n    dims: [ {_dims(tensor, batched)} ]\n  }}')
    return f"{key} [\n" + ",\n".join(entries) + "\n]\n"


def graph_config(name: str, spec: StoredSpec, *, platform: str, max_batch: int, instances: int, gpu: bool,
                 max_queue_delay_us: int, batch_limit: int | None = None, profiles: int = 1) -> str:
    """One graph's config: ``platform`` "onnxruntime_onnx" or "tensorrt_plan"; batched on the
    spec's leading dim up to ``max_batch`` (and ``batch_limit``: the graph's or engine profile's
    maximum) with dynamic batching; ``instances`` copies per GPU (or on the CPU)."""
    dim = batch_dim(spec)
    limit = 0
    if dim is not None and max_batch > 0:
        limit = min(max_batch, spec.dims.get(dim, (1, 1, max_batch))[2], batch_limit or max_batch)
    text = f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {limit}\n'
    text += "version_policy: { latest: { num_versions: 1 } }\n"
    text += _tensors("input", spec.inputs, limit > 0) + _tensors("output", spec.outputs, limit > 0)
    if limit > 1:
        # Requests from several clients share one run of the graph; a short wait fills the batch.
        text += f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
    text += _instances(instances, gpu, profiles)
    return text


def _instances(count: int, gpu: bool, profiles: int = 1) -> str:
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    # An engine with several optimization profiles: each instance uses the first, which covers the batch dim.
    profile = '\n    profile: [ "0" ]' if profiles > 1 else ""
    return f"instance_group [\n  {{\n    count: {count}\n    kind: {kind}{profile}\n  }}\n]\n"


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def session_config(*, max_sessions: int, instances: int, gpu: bool, idle_seconds: int, parameters: Mapping[str, str]) -> str:
    """The streaming session model (Python backend, one talkrt Session per sequence): the sequence
    batcher routes a sequence's requests to the instance that holds its session (START opens it,
    END flushes and closes it) and hands an instance up to ``max_sessions`` sequences' requests at
    once, which it renders in shared batches."""
    return (
        f'name: "{SESSION_MODEL}"\nbackend: "python"\nmax_batch_size: {max_sessions}\n'
        "version_policy: { latest: { num_versions: 1 } }\n"
        + _speech_io(ragged=True)
        + "sequence_batching {\n"
        f"  max_sequence_idle_microseconds: {idle_seconds * 1_000_000}\n"
        "  control_input [\n"
        '    {\n      name: "START"\n      control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ]\n    },\n'
        '    {\n      name: "END"\n      control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ]\n    }\n'
        "  ]\n"
        f"  oldest {{\n    max_candidate_sequences: {max_sessions}\n    preferred_batch_size: [ {max_sessions} ]\n    max_queue_delay_microseconds: 0\n  }}\n"
        "}\n"
        + _instances(instances, gpu)
        + _parameters({**parameters, "mode": "session"})
    )


def render_config(*, instances: int, gpu: bool, parameters: Mapping[str, str]) -> str:
    """The offline render model (Python backend): one request, one whole utterance, all its frames;
    its pipeline calls the graph models (BLS), so it batches nothing itself."""
    return (
        f'name: "{RENDER_MODEL}"\nbackend: "python"\nmax_batch_size: 0\n'
        "version_policy: { latest: { num_versions: 1 } }\n"
        + _speech_io(ragged=False)
        + _instances(instances, gpu)
        + _parameters({**parameters, "mode": "render"})
    )


def _parameters(parameters: Mapping[str, str]) -> str:
    return "".join(f'parameters: {{\n  key: "{key}"\n  value: {{ string_value: "{_quoted(value)}" }}\n}}\n' for key, value in parameters.items())


def _speech_io(ragged: bool) -> str:
    """The audio in and the frames out of the Python-backend models."""
    return (
        "input [\n"
        # float32 mono audio at SAMPLE_RATE; chunks of any length, so no shape must match across a batch
        '  {\n    name: "AUDIO"\n    data_type: TYPE_FP32\n    dims: [ -1 ]\n' + ("    allow_ragged_batch: true\n" if ragged else "") + "  },\n"
        # read at the start (default: the repository's sample rate)
        '  {\n    name: "SAMPLE_RATE"\n    data_type: TYPE_INT32\n    dims: [ 1 ]\n    optional: true\n  }\n'
        "]\n"
        "output [\n"
        '  {\n    name: "FRAMES"\n    data_type: TYPE_UINT8\n    dims: [ -1, -1, -1, 3 ]\n  },\n'  # BGR images completed by this request
        '  {\n    name: "PTS"\n    data_type: TYPE_INT64\n    dims: [ -1 ]\n  },\n'  # their times, in input samples from the start
        '  {\n    name: "FIRST"\n    data_type: TYPE_INT64\n    dims: [ 1 ]\n  },\n'  # the index of the first frame (-1: none)
        '  {\n    name: "FRAME_AUDIO"\n    data_type: TYPE_FP32\n    dims: [ -1 ]\n  }\n'  # the input samples these frames show
        "]\n"
    )
