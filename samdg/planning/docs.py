"""Regenerate the field reference in documentation/plans.md from the plans and method-settings dataclasses.

    python -m samdg.planning.docs            # rewrites the section between the markers
"""

from __future__ import annotations

import sys
from pathlib import Path

from samdg.planning.plans import field_reference_markdown, method_settings_classes
from samdg.utils.schema import markdown_table

BEGIN, END = "<!-- BEGIN GENERATED FIELD REFERENCE -->", "<!-- END GENERATED FIELD REFERENCE -->"
PAGE = Path(__file__).resolve().parents[2] / "documentation" / "plans.md"


def method_settings_markdown() -> str:
    """One table per registered method: the keys of ``methods.<name>`` (what ``--override`` accepts)."""
    tables = [markdown_table(cls, f"methods.{name}.", f"### `methods.{name}` ({cls.__doc__.strip()})")
              for name, cls in method_settings_classes().items()]
    return "\n\n".join(tables) + "\n"


def reference_markdown() -> str:
    return f"{field_reference_markdown()}\n{method_settings_markdown()}"


def render(page_text: str) -> str:
    head, _, rest = page_text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{reference_markdown()}{END}{tail}"


def main() -> int:
    text = PAGE.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        print(f"{PAGE}: markers {BEGIN} / {END} not found", file=sys.stderr)
        return 1
    PAGE.write_text(render(text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
