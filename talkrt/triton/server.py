"""A local `tritonserver` from the nvidia-pytriton wheel, for tests and benchmarks on machines
without the Triton container: the wheel bundles the server binary, its libraries, the Python
backend and a backend stub per Python version."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from talkrt.errors import TalkrtError


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    libraries: Path  # the wheel's bundled shared libraries (LD_LIBRARY_PATH)
    python_backend: Path
    stub: Path  # triton_python_backend_stub built for this Python


def find_tritonserver() -> TritonInstall:
    """The wheel's server, or one line saying what is missing."""
    import importlib.util

    found = importlib.util.find_spec("pytriton")
    if found is None or found.origin is None:
        raise TalkrtError("tritonserver not found: pip install --no-deps nvidia-pytriton (it bundles the server; --no-deps keeps NumPy 2)")
    package = Path(found.origin).parent
    root = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(root / "bin" / "tritonserver", package.parent / "nvidia_pytriton.libs", root / "backends" / "python",
                            root / "python_backend_stubs" / version / "triton_python_backend_stub")
    for path in (install.binary, install.python_backend / "libtriton_python.so", install.stub):
        if not path.is_file():
            raise TalkrtError(f"the nvidia-pytriton wheel lacks {path.relative_to(package.parent)} (Python {version})")
    return install


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalTriton:
    """``tritonserver --model-repository REPO`` on free loopback ports, its Python backend running
    this interpreter (so talkrt and torch import in the stub); ``models``: load only these (the
    wheel has no ONNX Runtime or TensorRT backend, so a CPU machine loads the Python-backend
    models alone); ``stop()`` ends it."""

    def __init__(self, repository: str | os.PathLike, work_dir: str | os.PathLike, models: Sequence[str] | None = None,
                 startup_s: float = 300.0) -> None:
        install = find_tritonserver()
        work = Path(work_dir)
        backends = work / "backends" / "python"
        backends.mkdir(parents=True, exist_ok=True)
        for item in ("libtriton_python.so", "triton_python_backend_utils.py"):
            target = backends / item
            if not target.exists():
                target.symlink_to(install.python_backend / item)
        # the backend looks for the stub beside itself; the wheel keeps one per Python version
        shutil.copy2(install.stub, backends / "triton_python_backend_stub")
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, (str(install.libraries), env.get("LD_LIBRARY_PATH"))))
        # the stub's Python finds its prefix (and so this venv's packages) from PATH
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        self.log = work / "tritonserver.log"
        args = [str(install.binary), "--model-repository", str(repository), "--backend-directory", str(work / "backends"),
                "--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1", "--metrics-address", "127.0.0.1",
                "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port),
                "--exit-timeout-secs", "10"]
        if models is not None:
            args += ["--model-control-mode", "explicit", *(f"--load-model={name}" for name in models)]
        with open(self.log, "wb") as sink:
            self.process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_ready(startup_s)
        except BaseException:
            self.stop()
            raise

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _wait_ready(self, deadline_s: float) -> None:
        import urllib.request

        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TalkrtError(f"tritonserver exited with {self.process.returncode}: {self._last_error()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TalkrtError(f"tritonserver was not ready after {deadline_s:.0f} s: {self._last_error()}")

    def _last_error(self) -> str:
        errors = [line for line in self.output().splitlines() if line.startswith("E") or "rror" in line]
        return errors[-1][:400] if errors else "(no error in its log)"

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> LocalTriton:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
