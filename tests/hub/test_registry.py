"""The pretrained registry: built-in entries, validation, registration and unpublished weights."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError, fields

import pytest

import velvet
from velvet.data.contract import PreprocessContract
from velvet.hub import (
    PretrainedEntry,
    PretrainedUnavailableError,
    download_pretrained,
    get_pretrained,
    list_pretrained,
    register_pretrained,
)
from velvet.hub import registry as registry_module
from velvet.models.config import list_models

BUILTIN = ("velvet-btsv.m3d-cap", "velvet-tiny.demo")
_SHA = "ab" * 32


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))


def _entry(name: str = "velvet-tiny.mine", **overrides: object) -> PretrainedEntry:
    kwargs: dict[str, object] = {
        "name": name,
        "arch": name.split(".")[0],
        "files": {"config.json": _SHA, "model.safetensors": _SHA.upper()},
        "base_url": "https://example.org/weights",
    }
    kwargs.update(overrides)
    return PretrainedEntry(**kwargs)  # type: ignore[arg-type]


def test_builtins_are_listed_with_every_field() -> None:
    entries = {e.name: e for e in list_pretrained()}
    assert set(BUILTIN) <= set(entries)
    for name in BUILTIN:
        entry = entries[name]
        assert {f.name for f in fields(entry)} >= {
            "arch",
            "files",
            "license",
            "paper",
            "preprocess",
            "description",
        }
        assert entry.arch in list_models() and name.startswith(entry.arch + ".")
        assert entry.license and "2508.12108" in entry.paper and entry.description
        PreprocessContract.from_dict(dict(entry.preprocess))  # the contract names a real preset
        # nothing is published yet: no entry may point at weights that do not exist
        assert not entry.available and "not published" in entry.unavailable_reason
        assert entry.hf_repo is None and entry.base_url is None and entry.source == "none"
    assert get_pretrained("velvet-btsv.m3d-cap").preprocess == {"preset": "m3d_cap"}
    # the only weights available are the ones shipped inside the package
    assert [e.name for e in list_pretrained(available_only=True)] == ["velvet-tiny.phantoms"]


@pytest.mark.parametrize("name", BUILTIN)
def test_unpublished_weights_raise_a_clear_error(name: str) -> None:
    for call in (download_pretrained, velvet.load_pretrained):
        with pytest.raises(PretrainedUnavailableError, match="not published") as info:
            call(name)
        assert (
            name in str(info.value) and "from_pretrained" in str(info.value) and "recipes/" in str(info.value)
        )


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="velvet-btsv.m3d-cap"):
        get_pretrained("velvet-huge.nope")


def test_register_and_overwrite() -> None:
    entry = register_pretrained(_entry())
    assert get_pretrained("velvet-tiny.mine") is entry
    assert entry.files["model.safetensors"] == _SHA  # hashes are normalised to lower case
    assert entry.source == "https://example.org/weights"
    with pytest.raises(ValueError, match="already exists"):
        register_pretrained(_entry())
    hub = register_pretrained(_entry(base_url=None, hf_repo="me/velvet", revision="0123abc"), overwrite=True)
    assert get_pretrained("velvet-tiny.mine").source == "hf://me/velvet@0123abc" == hub.source
    assert [e.name for e in list_pretrained(available_only=True)] == [
        "velvet-tiny.mine",
        "velvet-tiny.phantoms",
    ]


def test_entries_are_immutable() -> None:
    files = {"config.json": _SHA, "model.safetensors": _SHA}
    entry = _entry(files=files)
    files["model.safetensors"] = "cd" * 32
    assert entry.files["model.safetensors"] == _SHA
    with pytest.raises(FrozenInstanceError):
        entry.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        entry.files["config.json"] = "00"  # type: ignore[index]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "velvet-tiny"}, "<arch>.<tag>"),
        ({"arch": "velvet-btsv"}, "<arch>.<tag>"),
        ({"files": {"config.json": "abc", "model.safetensors": _SHA}}, "64 hex"),
        ({"files": {"../config.json": _SHA, "model.safetensors": _SHA}}, "relative POSIX"),
        ({"files": {"/etc/passwd": _SHA}}, "relative POSIX"),
        ({"files": {"tokenizer//vocab.txt": _SHA}}, "relative POSIX"),
        ({"files": {"config.json": _SHA}}, "model.safetensors"),
        ({"base_url": None}, "needs a source"),
        ({"hf_repo": "me/velvet"}, "one source"),
        ({"available": False, "base_url": None}, "unavailable_reason"),
    ],
)
def test_malformed_entries_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _entry(**overrides)


def test_import_is_light() -> None:
    code = (
        "import sys, velvet.hub; print(sorted(m for m in ('torch', 'huggingface_hub') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_hub_leaves_loading_to_the_models() -> None:
    import velvet.hub

    # velvet.hub never imports velvet.models; the loader is velvet.models.pretrained.from_pretrained
    assert not hasattr(velvet.hub, "load_pretrained")
    from velvet.models.pretrained import from_pretrained

    assert velvet.load_pretrained is from_pretrained
