"""The Lightning subcommands: what ``velvet`` offers, ``predict``'s pointer, no args/argv warning."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from velvet.cli.lightning import VelvetCLI, run_lightning_cli
from velvet.cli.main import COMMAND_MODULES, LIGHTNING_SUBCOMMANDS, PREDICT_MESSAGE, build_parser, main

README = Path(__file__).parents[2] / "README.md"
# Lightning's warning when the CLI gets `args` while sys.argv also holds arguments
BOTH_ARGS_WARNING = "not recommended to provide both args and command line arguments"

TINY_RECIPE = {
    "seed_everything": 0,
    "trainer": {
        "accelerator": "cpu",
        "devices": 1,
        "precision": "32-true",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    },
    "data": {
        "class_path": "velvet.data.datamodule.VelvetDataModule",
        "init_args": {
            "phantoms": {
                "n_cases": 8,
                "n_val": 2,
                "n_test": 2,
                "shape": [40, 40, 32],
                "spacing": [10, 10, 10],
            },
            "data_dir": "data",
            "cache_dir": "cache",
            "preprocess": {"preset": "ct_rate", "spacing": [10, 10, 10], "spatial_size": [32, 32, 32]},
            "batch_size": 2,
            "num_workers": 0,
            "vocab_size": 300,
        },
    },
    "model": {
        "class_path": "velvet.tasks.pretrain.PretrainTask",
        "init_args": {
            "model": {
                "preset": "velvet-tiny",
                "objectives": ["itc_report"],
                "embed_dim": 32,
                "vision": {"preset": "swin-tiny", "window_size": 4, "depths": [1, 1, 1, 1]},
                "text": {"preset": "text-tiny", "max_position_embeddings": 512, "num_fusion_layers": 0},
            }
        },
    },
}


def test_predict_is_not_offered() -> None:
    assert "predict" not in LIGHTNING_SUBCOMMANDS
    assert set(VelvetCLI.subcommands()) == set(LIGHTNING_SUBCOMMANDS)


def test_predict_points_to_embed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--config", "recipes/pretrain/demo.yaml"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == PREDICT_MESSAGE + "\n"
    assert "\n" not in PREDICT_MESSAGE and "velvet embed" in PREDICT_MESSAGE


def test_help_lists_what_is_offered() -> None:
    help_text = " ".join(build_parser().format_help().split())
    assert "Training subcommands: " + ", ".join(LIGHTNING_SUBCOMMANDS) + " " in help_text
    assert "predict" not in help_text
    for name in COMMAND_MODULES:
        assert re.search(rf"\b{name}\b", help_text)


def _readme_commands(text: str) -> set[str]:
    """The ``velvet X`` subcommands in the README's code: fenced blocks and inline code spans."""
    code = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    code += re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL))
    commands: set[str] = set()
    for snippet in code:
        # `velvet fit|validate|test ...` names three; `.venv/bin/velvet fit` and `&& velvet fit` too
        for names in re.findall(r"(?:^|[\s/])velvet ([a-z][a-z|]*)", snippet, flags=re.MULTILINE):
            commands |= set(names.split("|"))
    return commands


def test_readme_names_only_offered_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "`velvet " + "|".join(LIGHTNING_SUBCOMMANDS) + " --config" in text
    offered = set(LIGHTNING_SUBCOMMANDS) | set(COMMAND_MODULES)
    named = _readme_commands(text)
    assert named - offered == set(), "the README names commands that velvet does not offer"
    assert offered - named == set(), "commands that velvet offers are missing from the README"


def test_lightning_still_warns_when_args_differ_from_argv(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the control for the test below: the warning exists and is seen the way that test looks for it
    monkeypatch.setattr(sys, "argv", ["velvet", "something", "else"])
    recipe = str(Path(__file__).parents[2] / "recipes/pretrain/demo.yaml")
    with pytest.warns(UserWarning, match=BOTH_ARGS_WARNING), pytest.raises(SystemExit):
        run_lightning_cli(["fit", "--config", recipe, "--print_config"])
    assert "VelvetDataModule" in capsys.readouterr().out


@pytest.mark.slow
def test_fit_from_the_command_line_does_not_warn_about_args(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY_RECIPE), encoding="utf-8")
    # as the console script runs it: the arguments are only in sys.argv
    monkeypatch.setattr(sys, "argv", ["velvet", "fit", "--config", str(recipe), "--trainer.fast_dev_run=1"])
    assert main() == 0
    both = [str(w.message) for w in recwarn if BOTH_ARGS_WARNING in str(w.message)]
    assert both == []
    assert (tmp_path / "data/phantoms/manifest.csv").is_file()  # it really ran
