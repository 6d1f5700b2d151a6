"""Global options are taken before or after the subcommand, as people type them."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.cli import build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["--home", "/tmp/h", "--config", "c.yaml", "up"],
        ["up", "--home", "/tmp/h", "--config", "c.yaml"],
        ["--config", "c.yaml", "up", "--home", "/tmp/h"],
        ["--home", "/tmp/other", "up", "--home", "/tmp/h", "--config", "c.yaml"],
    ],
)
def test_home_and_config_before_or_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert (args.home, args.config) == (Path("/tmp/h"), Path("c.yaml"))


def test_options_not_given_anywhere_stay_unset():
    args = build_parser().parse_args(["history", "fraud-card-eu"])
    assert args.home is None and args.config is None
