"""The Family contract: everything the shared layers need to know about one model family.

One ``FAMILY`` object per package (``talkrt/models/<name>/family.py``), listed once
in :mod:`talkrt.models.registry`. It holds names and "module:attribute" references
only, so the registry can answer questions (which graphs, which roles, which
options) without importing torch or the family's model code; the references are
resolved when a graph is exported or a renderer is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


def read_manifest(directory: str | Path, family: str, export: str, title: str) -> dict:
    """The manifest.json of a directory ``talkrt export {export}`` wrote, checked to be ``family``'s
    (``title``: the family's name in messages)."""
    from talkrt.errors import TalkrtError
    from talkrt.fileio import read_json

    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise TalkrtError(f"{directory} has no manifest.json; export there first: talkrt export {export} --out-dir {directory} (--checkpoint DIR or --random-init)")
    manifest = read_json(path, "export the model again")
    if not isinstance(manifest, dict) or manifest.get("family") != family:
        raise TalkrtError(f"{path} is not a {title} manifest (family {manifest.get('family') if isinstance(manifest, dict) else None!r})")
    return manifest


def resolve(reference: str) -> Any:
    """``"package.module:attribute"`` -> the attribute (imports the module)."""
    module, attribute = reference.split(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Role:
    """A graph playing a part in a renderer: the exported graph's name (``talkrt export NAME``),
    the spec options that select it, and the file stem it has in an ``--engines`` directory."""

    graph: str
    stem: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def graph_name(self) -> str:
        """The graph name stored in the exported file (the spec's own name for a multi-graph export)."""
        return str(self.options.get("graph", self.graph))


@dataclass(frozen=True)
class Graph:
    """One exportable graph: its ExportSpec factory ("module:factory") and how ``talkrt export``
    takes its weights: "checkpoint" (a file, or --random-init), "transformers" (a checkpoint
    directory or a preset; ``layer``: the hidden layer is selectable), "none" (no weights), or
    "directory" (several graphs written by ``exporter``, "module:function", into one directory
    with a manifest.json; ``builder``, "module:function", builds their engines there).
    ``variants`` are the values of ``--graph`` for a spec that exports one of several graphs."""

    spec: str
    help: str
    weights: str = "checkpoint"
    variants: tuple[str, ...] = ()
    presets: str = ""
    layer: bool = False
    exporter: str | None = None
    builder: str | None = None


@dataclass(frozen=True)
class OptionFile:
    """A file option of a family's renderer (``--features``, ``--pca``) and what it holds."""

    name: str
    help: str


@dataclass(frozen=True)
class Family:
    """One model family.

    - ``graphs``: export name -> Graph.
    - ``signatures``: checkpoint kind -> the top-level key prefixes that identify it.
    - Renderer families also give ``roles`` (role -> Role; "generator" is the one ``--model``
      names), ``renderer`` ("module:function" building the renderer from a runner factory,
      the typed options and a RendererContext), ``options`` ("module:Class", a
      RendererOptions), ``option_files`` (those options read from files), ``avatar`` ("module:function" preparing avatar fields
      from frames and landmarks; None: crops from face boxes), ``crop`` (a description of the
      avatar crops, for help texts) and ``shared_weights`` (role -> the role whose checkpoint
      also holds it, for PyTorch).
    - Text-to-speech families give ``voice``: the module with ``load_voice(directory, backend,
      device, note, reference)`` -> (synthesizer, manifest) (``reference``: (speech file, its
      transcript) for a voice cloned from a reference, None otherwise), ``speak(text, synthesizer, manifest, speaker,
      seed, skip_unknown)`` -> (waveform, rate, seconds) and ``speak_stream(text, synthesizer,
      manifest, speaker, seed, skip_unknown, chunk_ms)`` -> (chunks, rate): float32 tensors on
      the voice's device, made as they are drawn, the first about ``chunk_ms`` long, which
      joined equal ``speak``'s waveform for the same seed.
    """

    name: str
    summary: str
    graphs: Mapping[str, Graph]
    signatures: Mapping[str, frozenset[str]] = field(default_factory=dict)
    roles: Mapping[str, Role] = field(default_factory=dict)
    renderer: str | None = None
    options: str | None = None
    option_files: tuple[OptionFile, ...] = ()
    avatar: str | None = None
    crop: str = ""
    shared_weights: Mapping[str, str] = field(default_factory=dict)
    voice: str | None = None

    @property
    def is_renderer(self) -> bool:
        return self.renderer is not None

    def spec(self, graph: str, /, **options: Any):
        """The ExportSpec of ``graph`` (one of ``graphs``), with the graph's own options."""
        return resolve(self.graphs[graph].spec)(**options)

    def renderer_options(self, files: Mapping[str, Path | None] | None = None, trust: bool = False, **fields: Any) -> "RendererOptions":
        """The renderer's typed options: from its option files (``talkrt run --features ...``), or
        from their fields (``features=array``); nothing given: the defaults."""
        kind = resolve(self.options) if self.options else RendererOptions
        return kind.from_files(files, trust) if files else kind(**fields)

    def build_renderer(self, runner: Callable[..., Any], options: "RendererOptions", context: "RendererContext") -> Any:
        return resolve(self.renderer)(runner, options, context)

    def directory_graph(self) -> Graph | None:
        """The graph exported as a directory (a voice), if the family has one."""
        return next((graph for graph in self.graphs.values() if graph.weights == "directory"), None)

    def prepare_avatar(self) -> Callable[..., dict] | None:
        return resolve(self.avatar) if self.avatar else None


@dataclass(frozen=True)
class RendererOptions:
    """A renderer's options (a family subclasses it with its own fields)."""

    @classmethod
    def from_files(cls, files: Mapping[str, Path | None], trust: bool) -> "RendererOptions":
        return cls()

    def unused_roles(self) -> frozenset[str]:
        """Roles these options make unnecessary (DINet's asr and mapper, with precomputed features)."""
        return frozenset()


@dataclass(frozen=True)
class RendererContext:
    """What a family's renderer factory gets besides its runners: where it runs, and which
    roles have a file (a role without one runs random weights in PyTorch). No stream: the
    pipeline hands it to ``Renderer.bind``, which activates the runners on it."""

    backend: str
    device: Any
    models: Mapping[str, Path | str | None]
