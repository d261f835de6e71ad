"""The only list of model families. Each name maps to its package's ``family.py``, imported on
first use (a handful of dataclasses: no torch, no model code). The CLI, export, the avatar code
and the pipeline ask here; none of them names a family."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from talkrt.errors import TalkrtError
from talkrt.fileio import read_json_object
from talkrt.models.family import Family, resolve

FAMILIES: tuple[str, ...] = ("wav2lip", "dinet", "dhlive", "hubert", "vits", "gpt_sovits")
# The renderer of the demo and of the defaults (`--renderer`; avatars of format version 1 crop for it).
DEFAULT_RENDERER = "wav2lip"

_loaded: dict[str, Family] = {}


def get_family(name: str) -> Family:
    """The family called ``name``."""
    if name not in FAMILIES:
        raise TalkrtError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    if name not in _loaded:
        _loaded[name] = importlib.import_module(f"talkrt.models.{name}.family").FAMILY
    return _loaded[name]


def families() -> list[Family]:
    return [get_family(name) for name in FAMILIES]


def renderer_names() -> tuple[str, ...]:
    """Families that render faces (``--renderer`` choices), in registry order."""
    return tuple(family.name for family in families() if family.is_renderer)


def get_renderer_family(name: str) -> Family:
    """A family that renders faces, or one line naming those that do."""
    if name not in renderer_names():
        raise TalkrtError(f"unknown renderer {name!r}; available: {', '.join(renderer_names())}")
    return get_family(name)


def graph_names() -> list[str]:
    """Every exportable graph (``talkrt export NAME``), family by family."""
    return [graph for family in families() for graph in family.graphs]


def graph_family(graph: str) -> Family:
    """The family that exports ``graph``."""
    for family in families():
        if graph in family.graphs:
            return family
    raise TalkrtError(f"unknown model family {graph!r}; known: {', '.join(sorted(graph_names()))}")


def get_spec(graph: str, /, **options):
    """The ExportSpec of ``graph`` (options are the graph's own, e.g. a preset)."""
    return graph_family(graph).spec(graph, **options)


def guess_family(keys: set[str] | Mapping[str, object]) -> str | None:
    """The checkpoint kind whose top-level modules best match ``keys`` (a state_dict or its keys), or None.
    A wrapper's prefix on every key (``module.`` of DataParallel, ``model.`` of Lightning) is looked through."""
    prefixes = {k.split(".", 1)[0] for k in keys}
    if len(prefixes) == 1 and prefixes <= {"module", "model"}:
        prefixes = {k.split(".", 2)[1] for k in keys if k.count(".") >= 2}
    best, best_score = None, 0.0
    for family in families():
        for kind, signature in family.signatures.items():
            if not signature <= prefixes:
                continue
            score = len(signature) / len(signature | prefixes)
            if score > best_score:
                best, best_score = kind, score
    return best


MANIFEST = "manifest.json"


def directory_family(directory: str | Path) -> Family:
    """The family whose export wrote ``directory`` (its manifest.json names it)."""
    path = Path(directory) / MANIFEST
    kinds = [name for family in families() for name, graph in family.graphs.items() if graph.weights == "directory"]
    if not path.is_file():
        raise TalkrtError(f"{directory} has no {MANIFEST}; export there first: talkrt export {'|'.join(kinds)} --out-dir {directory}")
    name = read_json_object(path, "export the model again").get("family")
    if name not in FAMILIES or get_family(name).directory_graph() is None:
        raise TalkrtError(f"{path} names family {name!r}, which talkrt does not export as a directory ({', '.join(kinds)} do)")
    return get_family(name)


def build_directory(directory: str | Path, options) -> str:
    """Build the engines of every graph in an exported directory (its family's builder, given
    ``BuildOptions``) and name them in its manifest; returns what was written."""
    from talkrt.outputs import check_outputs

    directory = Path(directory)
    check_outputs({"DIR": directory}, directories=["DIR"])
    manifest = resolve(directory_family(directory).directory_graph().builder)(directory, options)
    return f"{', '.join(str(directory / engine) for engine in manifest['engines'].values())} and updated {directory / MANIFEST}"


def voice(directory: str | Path) -> ModuleType:
    """The voice module (``load_voice``, ``speak``, ``speak_stream``) of the text-to-speech model exported to ``directory``."""
    family = directory_family(directory)
    if family.voice is None:
        raise TalkrtError(f"{directory} holds a {family.name} export, which is not a voice")
    return importlib.import_module(family.voice)
