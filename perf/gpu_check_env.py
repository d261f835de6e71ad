"""What perf/gpu_check.sh reports about the machine: Python, talkrt, torch and the GPU, optional packages,
and the project's requirements that are not installed. Exits 1 when talkrt does not import or no GPU is visible.

    python3 perf/gpu_check_env.py            the report
    python3 perf/gpu_check_env.py --commit   one line: the commit the results belong to
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import platform
import re
import sys
import tomllib

from _machine import REPO, git_commit

OPTIONAL_MODULES = ("tensorrt", "tensorrt_rtx", "av", "cv2", "cupy", "cuda.bindings", "cuda.core", "polygraphy", "typer", "scipy", "librosa")


def module_state(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # a broken install (a missing shared library) counts as missing too
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return f"missing ({type(exc).__name__}: {first_line})"
    return str(getattr(module, "__version__", "present"))


def missing_requirements() -> list[str]:
    """Distributions named by pyproject.toml's dependencies and test extra that are not installed."""
    with open(REPO / "pyproject.toml", "rb") as file:
        project = tomllib.load(file)["project"]
    missing = []
    for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
        name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def report() -> int:
    failed = False
    print(f"python: {sys.version.split()[0]} on {platform.platform()}")
    try:
        import talkrt

        print(f"talkrt: {talkrt.__version__} from {talkrt.__file__}")
    except Exception as exc:
        print(f"talkrt: does not import: {type(exc).__name__}: {exc}")
        failed = True

    import torch

    print(f"torch: {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        print(f"GPU: {props.name}, compute capability {props.major}.{props.minor}, {props.total_memory / 2**30:.1f} GiB, {torch.cuda.device_count()} visible")
    else:
        print("GPU: none visible to torch")
        failed = True
    for name in OPTIONAL_MODULES:
        print(f"import {name}: {module_state(name)}")
    try:
        import onnxruntime

        print(f"import onnxruntime: {onnxruntime.__version__}, providers {onnxruntime.get_available_providers()}")
    except Exception as exc:
        print(f"import onnxruntime: missing ({type(exc).__name__})")
    print(f"project and test requirements not installed: {', '.join(missing_requirements()) or 'none'}")
    return 1 if failed else 0


def commit_line() -> str:
    commit = git_commit()
    line = f"{commit['commit']}, uncommitted changes: {commit['uncommitted_changes']}"
    if "stamped" in commit:
        line += f" (stamped {commit['stamped']} by --fetch-wheels, where the repository is)"
    return line


if __name__ == "__main__":
    if sys.argv[1:] == ["--commit"]:
        print(commit_line())
        raise SystemExit(0)
    raise SystemExit(report())
