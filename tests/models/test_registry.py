"""The registry is the one list of families, and what it says holds: every graph builds its spec,
every renderer's roles point at graphs that exist, options come from their files."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from talkrt.errors import TalkrtError
from talkrt.models.family import RendererOptions
from talkrt.models.registry import (
    DEFAULT_RENDERER,
    FAMILIES,
    directory_family,
    families,
    get_family,
    get_renderer_family,
    get_spec,
    graph_family,
    graph_names,
    renderer_names,
    voice,
)

SMALL = {"hubert": {"preset": "tiny-hubert"}, "wav2vec2": {"preset": "tiny-wav2vec2"}, "hubert-asr": {"preset": "tiny-hubert-asr"}, "vits": {"preset": "tiny"}}


def test_families_load_without_torch_and_name_themselves() -> None:
    import subprocess

    code = "import sys; from talkrt.models.registry import families; fs = families(); print(sorted(f.name for f in fs), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("] ")
    assert out[0] + "]" == str(sorted(FAMILIES)) and out[1].strip() == "False"
    assert [family.name for family in families()] == list(FAMILIES)


@pytest.mark.parametrize("name", graph_names())
def test_every_graph_builds_its_spec(name) -> None:
    spec = get_spec(name, **SMALL.get(name, {}))
    assert spec.family == name or spec.name.startswith(name)
    assert graph_family(name).graphs[name].help


def test_graph_names_are_unique_and_unknown_ones_are_one_line() -> None:
    assert len(graph_names()) == len(set(graph_names()))
    with pytest.raises(TalkrtError, match="unknown model family 'nope'; known: .*wav2lip"):
        get_spec("nope")
    with pytest.raises(TalkrtError, match="unknown renderer 'hubert'; available: wav2lip, dinet, dhlive"):
        get_renderer_family("hubert")


@pytest.mark.parametrize("renderer", renderer_names())
def test_renderer_roles_point_at_registered_graphs(renderer) -> None:
    family = get_renderer_family(renderer)
    assert "generator" in family.roles
    stems = [role.stem for role in family.roles.values()]
    assert len(stems) == len(set(stems))
    for role in family.roles.values():
        assert role.graph in graph_names()
    for role, owner in family.shared_weights.items():
        assert role in family.roles and owner in family.roles
    assert isinstance(family.renderer_options(), RendererOptions)


def test_default_renderer_is_a_renderer() -> None:
    assert DEFAULT_RENDERER in renderer_names()


def test_renderer_options_come_from_their_files(tmp_path) -> None:
    features = tmp_path / "features.npy"
    np.save(features, np.zeros((10, 29), np.float32))
    options = get_family("dinet").renderer_options({"features": features}, trust=False)
    assert options.features.shape == (10, 29) and options.unused_roles() == {"asr", "mapper"}
    assert get_family("dinet").renderer_options().unused_roles() == frozenset()
    with pytest.raises(TalkrtError, match="is not a .npy array"):
        (tmp_path / "bad.npy").write_text("not numpy")
        get_family("dinet").renderer_options({"features": tmp_path / "bad.npy"}, trust=False)
    from talkrt.models.dhlive.model import MouthPCA

    stand_in, pca = MouthPCA.random(1), tmp_path / "pca.npz"
    np.savez(pca, mean=stand_in.mean, components=stand_in.components)
    loaded = get_family("dhlive").renderer_options({"pca": pca}, trust=False).pca
    np.testing.assert_array_equal(loaded.components, stand_in.components)
    assert get_family("dhlive").renderer_options().pca is None  # the renderer draws its random stand-in


def test_directories_name_their_family(tmp_path) -> None:
    with pytest.raises(TalkrtError, match=r"has no manifest.json; export there first: talkrt export vits\|gpt-sovits --out-dir"):
        directory_family(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"family": "wav2lip"}))
    with pytest.raises(TalkrtError, match="names family 'wav2lip', which talkrt does not export as a directory"):
        directory_family(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"family": "vits"}))
    assert directory_family(tmp_path).name == "vits"
    assert hasattr(voice(tmp_path), "load_voice") and hasattr(voice(tmp_path), "speak")
