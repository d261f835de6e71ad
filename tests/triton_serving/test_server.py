"""A real Triton server (the nvidia-pytriton wheel's binary, on this CPU machine) runs the
repository's Python-backend models: sequences streamed through tritonclient get the frames the
in-process Session API gives for the same chunks, exactly (ONNX Runtime on the CPU in both), and
the offline render model, whose graphs run as BLS requests to the graph model, gets the same
frames as one in-process push and flush. The wheel has no ONNX Runtime backend, so here the graph
model's ONNX file is served by a Python-backend stand-in (ort_graph_model.py) under the config
talkrt wrote, its platform swapped for the Python backend."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from talkrt.errors import TalkrtError

grpcclient = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient (pip install talkrt[triton])")

RATE = 16000


@pytest.fixture(scope="module")
def triton(models_dir, triton_avatar, tmp_path_factory):
    from talkrt.triton.repository import write_repository
    from talkrt.triton.server import LocalTriton, find_tritonserver

    try:
        find_tritonserver()
    except TalkrtError as error:
        pytest.skip(f"no Triton server binary on this machine: {error}")
    work = tmp_path_factory.mktemp("triton")
    write_repository(work / "repo", models_dir, avatar=triton_avatar, gpu=False, max_sessions=2)
    graph = work / "repo" / "wav2lip"
    config = graph / "config.pbtxt"
    config.write_text(config.read_text().replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
    shutil.copyfile(Path(__file__).with_name("ort_graph_model.py"), graph / "1" / "model.py")
    try:
        server = LocalTriton(work / "repo", work / "server", models=["talkrt_session", "talkrt_render", "wav2lip"])
    except TalkrtError as error:
        log = (work / "server" / "tritonserver.log").read_text(errors="replace") if (work / "server" / "tritonserver.log").is_file() else ""
        if "error while loading shared libraries" in log or "GLIBC" in log:  # the binary itself cannot run here
            pytest.skip(f"tritonserver could not start on this machine: {log.strip().splitlines()[-1][:300]}")
        raise  # a model that fails to load is a failure, not a skip
    yield server, work / "repo"
    assert server.stop() == 0, server.output()[-4000:]


def speech(seed: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal(int(RATE * seconds))).astype(np.float32)
    audio[: RATE // 10] = 0  # digital silence first: the session shows the avatar's own frames there
    return audio


def in_process(repo: Path, chunks: list[np.ndarray], batch_size: int = 8) -> list:
    """The frames of each chunk from talkrt's Session on the repository's own graph and avatar."""
    from talkrt.runtime.runs import RunRequest, open_pipeline
    from talkrt.runtime.session import Session

    avatar = repo / "talkrt_session" / "1" / "avatar.npz"
    pipeline = open_pipeline(RunRequest(avatar=avatar, backend="ort", device="cpu", batch_size=batch_size), {"generator": repo / "wav2lip" / "1" / "model.onnx"}, profile=False)
    try:
        session = Session(pipeline, RATE)
        steps = [session.push(chunk) for chunk in chunks]
        steps[-1] += session.flush()
        return [(np.concatenate([f.images.cpu().numpy() for f in s]) if s else None, np.concatenate([f.pts for f in s]) if s else None) for s in steps]
    finally:
        pipeline.close()


def send(client, sequence: int, chunk: np.ndarray, start: bool, end: bool):
    audio = grpcclient.InferInput("AUDIO", [1, len(chunk)], "FP32")
    audio.set_data_from_numpy(chunk[None])
    result = client.infer("talkrt_session", [audio], sequence_id=sequence, sequence_start=start, sequence_end=end)
    frames, pts, first = result.as_numpy("FRAMES")[0], result.as_numpy("PTS")[0], int(result.as_numpy("FIRST")[0, 0])
    assert len(result.as_numpy("FRAME_AUDIO")[0]) == (len(frames) and RATE // 25 * len(frames))
    return frames, pts, first


def test_streamed_sequences_get_the_in_process_sessions_frames(triton) -> None:
    server, repo = triton
    client = grpcclient.InferenceServerClient(server.grpc_url)
    streams = {11: np.array_split(speech(1, 1.2), 5), 12: np.array_split(speech(2, 0.9), 4)}
    got: dict[int, list] = {key: [] for key in streams}
    # two sequences interleaved: each keeps its own session on the server
    for step in range(max(len(chunks) for chunks in streams.values())):
        for key, chunks in streams.items():
            if step < len(chunks):
                got[key].append(send(client, key, chunks[step], step == 0, step == len(chunks) - 1))
    for key, chunks in streams.items():
        expected = in_process(repo, chunks)
        shown = 0
        for (frames, pts, first), (want_frames, want_pts) in zip(got[key], expected):
            if want_frames is None:
                assert len(frames) == 0 and first == -1
                continue
            assert first == shown
            np.testing.assert_array_equal(pts, want_pts)
            np.testing.assert_array_equal(frames, want_frames)
            shown += len(frames)
        assert shown == int(np.ceil(len(np.concatenate(chunks)) / RATE * 25))


def test_a_request_without_start_is_refused(triton) -> None:
    server, _ = triton
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(Exception, match="START"):
        send(client, 99, np.zeros(640, np.float32), start=False, end=False)


def test_offline_render_through_the_graph_model_gets_the_in_process_frames(triton) -> None:
    server, repo = triton
    client = grpcclient.InferenceServerClient(server.grpc_url)
    audio = speech(3, 1.1)
    inputs = grpcclient.InferInput("AUDIO", [len(audio)], "FP32")
    inputs.set_data_from_numpy(audio)
    result = client.infer("talkrt_render", [inputs])
    (want_frames, want_pts), = in_process(repo, [audio])
    np.testing.assert_array_equal(result.as_numpy("PTS"), want_pts)
    np.testing.assert_array_equal(result.as_numpy("FRAMES"), want_frames)
    assert int(result.as_numpy("FIRST")[0]) == 0 and len(want_frames) == 28
    # the frames came through the graph model: Triton counted its requests
    stats = client.get_inference_statistics("wav2lip").model_stats[0]
    assert stats.inference_count >= -(-len(want_frames) // 8)
