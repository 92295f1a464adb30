"""`import velvet` and the light CLI commands must not pay for the heavy dependencies."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("lightning", "pytorch_lightning", "monai", "transformers", "SimpleITK", "nibabel")


def _loaded_after(code: str) -> set[str]:
    probe = (
        f"{code}\nimport sys\nprint(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in out.split()}


def test_import_velvet_is_light():
    assert _loaded_after("import velvet") == set()


def test_cli_parser_is_light():
    # building the parser imports every light command module
    assert _loaded_after("from velvet.cli.main import build_parser; build_parser()") == set()


def test_core_never_imports_lightning():
    loaded = _loaded_after(
        "import velvet.data.cache, velvet.data.transforms, velvet.data.dataset, velvet.models.config, "
        "velvet.losses, velvet.metrics.retrieval"
    )
    assert "lightning" not in loaded and "pytorch_lightning" not in loaded


def test_lazy_attributes_resolve():
    import velvet

    assert callable(velvet.read_volume) and velvet.PreprocessContract.__name__ == "PreprocessContract"
