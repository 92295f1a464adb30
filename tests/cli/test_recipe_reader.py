"""Recipes read as ``velvet fit --config`` reads them: includes, nested includes, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from velvet.cli.commands.data import read_data_section
from velvet.cli.lightning import read_recipe
from velvet.cli.main import main

RECIPE_DIR = Path(__file__).parents[2] / "recipes" / "pretrain"
RECIPES = sorted(RECIPE_DIR.glob("*.yaml"))
DATA_MODULE = "velvet.data.datamodule.VelvetDataModule"
MODEL = {"class_path": "velvet.tasks.pretrain.PretrainTask", "init_args": {"model": "velvet-tiny"}}


def _write(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return path


def test_the_recipes_are_found() -> None:
    assert len(RECIPES) >= 8
    # most recipes name their data section by a path: the case the reader must resolve
    assert sum(isinstance(yaml.safe_load(p.read_text())["data"], str) for p in RECIPES) >= 2


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_yields_its_data_section(recipe: Path) -> None:
    class_path, init_args = read_data_section(recipe)
    assert class_path == DATA_MODULE
    raw = yaml.safe_load(recipe.read_text())["data"]
    if isinstance(raw, str):  # an include, relative to the recipe's folder
        raw = yaml.safe_load((recipe.parent / raw).read_text())
    # the recipe's own values, plus the DataModule's defaults for the rest
    assert init_args.items() >= raw["init_args"].items()
    assert "seed" in init_args and "warm_cache" in init_args


def test_include_resolves_from_the_recipe_folder_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    class_path, init_args = read_data_section(RECIPE_DIR / "full_btsv.yaml")
    assert class_path == DATA_MODULE and init_args["manifest"] == "data/m3d_cap/manifest.csv"


def test_nested_includes_resolve_from_the_including_file(tmp_path: Path) -> None:
    data = {"class_path": DATA_MODULE, "init_args": {"phantoms": {"n_cases": 4}, "vocab_size": 123}}
    _write(tmp_path / "shared/data.yaml", data)
    _write(
        tmp_path / "shared/more/logger.yaml",
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
    )
    # the trainer file names its logger relative to its own folder (shared/), not the recipe's
    _write(tmp_path / "shared/trainer.yaml", {"max_epochs": 3, "logger": "more/logger.yaml"})
    recipe = _write(
        tmp_path / "recipe.yaml",
        {"trainer": "shared/trainer.yaml", "data": "shared/data.yaml", "model": MODEL},
    )
    class_path, init_args = read_data_section(recipe)
    assert (
        class_path == DATA_MODULE
        and init_args["vocab_size"] == 123
        and init_args["phantoms"] == {"n_cases": 4}
    )
    trainer = read_recipe(recipe).trainer
    assert trainer.max_epochs == 3 and trainer.logger.class_path == "lightning.pytorch.loggers.CSVLogger"


def test_a_data_only_recipe_is_read(tmp_path: Path) -> None:
    recipe = _write(
        tmp_path / "r.yaml", {"data": {"class_path": DATA_MODULE, "init_args": {"batch_size": 3}}}
    )
    assert read_data_section(recipe)[1]["batch_size"] == 3


def test_missing_include_names_the_recipe_and_the_include(tmp_path: Path) -> None:
    recipe = _write(tmp_path / "r.yaml", {"data": "shared/nope.yaml", "model": MODEL})
    with pytest.raises(ValueError) as info:
        read_data_section(recipe)
    assert str(info.value) == (
        f"{recipe}: included file `data: shared/nope.yaml` not found: no file {tmp_path / 'shared/nope.yaml'}"
    )


def test_missing_nested_include_names_the_file_that_includes_it(tmp_path: Path) -> None:
    _write(
        tmp_path / "shared/data.yaml", {"class_path": DATA_MODULE, "init_args": {"phantoms": {"n_cases": 4}}}
    )
    _write(tmp_path / "shared/trainer.yaml", {"logger": "more/gone.yaml"})
    recipe = _write(tmp_path / "r.yaml", {"trainer": "shared/trainer.yaml", "data": "shared/data.yaml"})
    with pytest.raises(ValueError, match="included file") as info:
        read_data_section(recipe)
    message = str(info.value)
    assert message.startswith(f"{recipe}: included file `logger: more/gone.yaml`")
    assert f"named in {tmp_path / 'shared/trainer.yaml'}" in message
    assert str(tmp_path / "shared/more/gone.yaml") in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"model": MODEL}, "no `data:` section"),
        ("data: [1\n", "not valid YAML"),
        ({"data": {"class_path": DATA_MODULE, "init_args": {"batchsize": 3}}}, "batchsize"),
        ({"dta": {"class_path": DATA_MODULE}}, "dta"),
    ],
    ids=["no-data", "bad-yaml", "unknown-argument", "unknown-section"],
)
def test_bad_recipes_name_the_file(tmp_path: Path, content: object, expected: str) -> None:
    recipe = tmp_path / "r.yaml"
    if isinstance(content, str):
        recipe.write_text(content)
    else:
        _write(recipe, content)
    with pytest.raises(ValueError) as info:
        read_data_section(recipe)
    assert str(info.value).startswith(f"{recipe}: ") and expected in str(info.value)


def test_data_check_reports_a_missing_include_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _write(tmp_path / "r.yaml", {"data": "shared/nope.yaml"})
    assert main(["data", "check", "--config", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {recipe}: included file `data: shared/nope.yaml` not found: no file {tmp_path / 'shared/nope.yaml'}\n"
    )


def test_data_check_reports_a_missing_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", "--config", str(tmp_path / "absent.yaml")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'absent.yaml'}: no such recipe file\n"
