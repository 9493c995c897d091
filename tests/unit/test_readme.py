"""The README stays current: every setting is in its table, and the quick start is two commands."""

import re
from pathlib import Path

from smsdispatch.config import ENV_PREFIX, Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_has_a_row_in_the_configuration_table():
    for name in Settings.model_fields:
        assert f"| `{ENV_PREFIX}{name.upper()}` |" in README, name


def test_quick_start_is_one_block_of_exactly_two_commands():
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\w*\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    assert blocks[0].strip().splitlines() == ["make demo", "make test"]
