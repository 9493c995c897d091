"""The README's Django section shows tested code: every line of its view is a line of the test
project's view (tests/djangoproject/shop/views.py), which tests/django_integration drives."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTION = (ROOT / "README.md").read_text().split("### Django\n", 1)[1].split("\n### ", 1)[0]
VIEWS = (ROOT / "tests/djangoproject/shop/views.py").read_text()
SETTINGS = (ROOT / "tests/djangoproject/settings.py").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", SECTION, re.S)


def test_the_view_in_the_readme_is_the_test_projects():
    view = next(block for block in python_blocks() if "def place_order" in block)
    project = {line.strip() for line in VIEWS.splitlines()}
    missing = [line for line in view.splitlines() if line.strip() and line.strip() not in project
               and not line.strip().startswith("# or:")]
    assert not missing, f"README lines not in {VIEWS and 'tests/djangoproject/shop/views.py'}: {missing}"


def test_the_settings_and_commands_name_what_the_project_uses():
    assert '"smsdispatch.contrib.django"' in SETTINGS and "SMSDISPATCH = " in SETTINGS
    assert "celery -A smsdispatch.contrib.django.worker worker" in SECTION
    assert "celery -A smsdispatch.contrib.django.worker beat" in SECTION
    assert "pip install 'smsdispatch[django]'" in SECTION
