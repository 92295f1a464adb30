"""One cache-root rule: the hub and the volume cache agree under every environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from velvet.utils.paths import velvet_cache_root


@pytest.mark.parametrize(
    ("velvet_cache", "xdg", "expected"),
    [
        ("{tmp}/mine", "{tmp}/xdg", "{tmp}/mine"),  # VELVET_CACHE wins
        (None, "{tmp}/xdg", "{tmp}/xdg/velvet"),
        ("", "{tmp}/xdg", "{tmp}/xdg/velvet"),  # empty counts as unset
        (None, None, "{home}/.cache/velvet"),
        (None, "", "{home}/.cache/velvet"),
        ("~/v", None, "{home}/v"),  # ~ is expanded
    ],
)
def test_hub_and_volume_cache_share_one_root(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    velvet_cache: str | None,
    xdg: str | None,
    expected: str,
) -> None:
    import velvet.hub
    from velvet.data.cache import default_cache_dir

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for var, value in (("VELVET_CACHE", velvet_cache), ("XDG_CACHE_HOME", xdg)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value.format(tmp=tmp_path))
    root = Path(expected.format(tmp=tmp_path, home=home))
    assert velvet_cache_root() == root
    assert velvet.hub.cache_root() == root
    assert default_cache_dir() == root / "volumes"
