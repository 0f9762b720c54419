"""The docs promise things the repository must keep true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_run_and_test_commands_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line]
    assert commands == ["make run", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_document_the_readme_links_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs/|CHANGELOG)[^)#]+)", readme)
    assert len(links) >= 9
    missing = [link for link in links if not (ROOT / link).exists()]
    assert missing == []


def test_cli_doc_lists_every_core_command() -> None:
    from runarchive.cli import cli

    text = (ROOT / "docs" / "cli.md").read_text()
    for name in ("archive", "list", "verify", "restore", "delete", "recover", "demo"):
        assert name in cli.commands
        assert f"runarchive {name}" in text


def test_no_file_holds_a_merge_conflict_marker() -> None:
    # A conflict resolved by hand and committed with a marker left in reads as a real document
    # (the docs' tables and code render around it), so nothing else would catch it.
    marker = re.compile(r"^(<{7} |>{7} |={7}$)", re.M)
    folders = ("src", "tests", "docs", "bench")
    texts = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "pyproject.toml", ROOT / "Makefile"]
    for folder in folders:
        texts += [p for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".md", ".js",
                  ".css", ".html", ".toml", ".txt"}]  # fmt: skip
    found = [str(p.relative_to(ROOT)) for p in texts if marker.search(p.read_text("utf-8"))]
    assert found == []


def test_architecture_names_every_module() -> None:
    # docs/architecture.md is where a newcomer guesses the file from the concept: a module it
    # does not name is one they cannot find. Every module (and dashboard script) is named there
    # in backticks, bare or with its folder.
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`(?:[\w/]+/)?(\w+\.(?:py|js))`", text))
    package = ROOT / "src" / "runarchive"
    modules = {p.name for p in package.rglob("*.py") if p.name != "__init__.py"}
    modules |= {p.name for p in (package / "web" / "static" / "js").glob("*.js")}
    assert sorted(modules - named) == []
