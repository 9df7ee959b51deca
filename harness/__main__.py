"""``python -m harness contract [RULE]``: the contract the harness enforces, as it ships with it;
``python -m harness checks``: its checks, as README's table lists them."""

from __future__ import annotations

import sys
from importlib import resources

USAGE = (
    "usage: python -m harness contract [RULE]   (RULE: an anchor such as envelope or run-200)\n"
    "       python -m harness checks [grpc]     (the checks, as a Markdown table)"
)


def contract_text(rule: str | None = None) -> str:
    text = resources.files("harness").joinpath("contract.md").read_text(encoding="utf-8")
    if rule is None:
        return text
    marker = f'<a id="{rule}"></a>'
    if marker not in text:
        raise KeyError(rule)
    section = text.split(marker, 1)[1]
    return section.split('<a id="', 1)[0].strip() + "\n"


def checks_table(protocol: str = "http") -> str:
    """README's table of a variant's checks, derived from its registry."""
    from .contracts import contract_for

    rows = [
        f"| `{check_id}` | [{rule}](docs/contract.md#{rule}) | {summary} |"
        for check_id, rule, summary in contract_for(protocol).registry.describe()
    ]
    return "\n".join(["| check id | rule | what it checks |", "|---|---|---|", *rows]) + "\n"


def main(argv: list[str]) -> int:
    if argv[:1] == ["checks"] and len(argv) <= 2 and (argv[1:] or ["http"])[0] in ("http", "grpc"):
        sys.stdout.write(checks_table(argv[1] if len(argv) == 2 else "http"))
        return 0
    if not argv or argv[0] != "contract" or len(argv) > 2:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        sys.stdout.write(contract_text(argv[1] if len(argv) == 2 else None))
    except KeyError:
        print(f"harness: the contract has no rule {argv[1]!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
