"""The README and docs/ stand alone: every repository path they name in backticks exists, and none
points outside the repository (the plan is restated in docs/plan.md, not referenced from elsewhere)."""

import re

import pytest

from conftest import PROJECT_DIR

DOCS = [PROJECT_DIR / "README.md", *sorted((PROJECT_DIR / "docs").glob("*.md")),
        *sorted(PROJECT_DIR.glob("*/README.md")), *sorted(PROJECT_DIR.glob("roles/*/README.md"))]
# Made by a run or by the set-up, not in git: named by the docs, never required to exist.
GENERATED = ("artifacts/", ".embedded/", ".cache/", ".venv/", "build/", ".embedded-npm/", "benchmarks/results/")
PATH_LIKE = re.compile(r"`((?:\.\./)*[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]*)+)`")
TOP_LEVEL = {p.name for p in PROJECT_DIR.iterdir()} - {".git"}


def named_paths(text):
    """Backticked tokens that are repository paths: they begin with one of the repository's top-level
    names (or climb out of it with ../); no placeholders, no globs. A name inside a package's or an
    inventory's own folder (`clone/`, `group_vars/migration/`) is read in its context and not checked."""
    for token in PATH_LIKE.findall(text):
        if token.startswith(GENERATED) or "//" in token:
            continue
        if token.startswith("../") or token.split("/", 1)[0] in TOP_LEVEL:
            yield token


def resolves_to(doc, token):
    """Where a named path leads: ../ climbs from the document's folder, anything else is from the root."""
    return (doc.parent / token).resolve() if token.startswith("../") else PROJECT_DIR / token


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(PROJECT_DIR).as_posix())
def test_every_named_path_exists_inside_the_repository(doc):
    name = doc.relative_to(PROJECT_DIR).as_posix()
    tokens = sorted(set(named_paths(doc.read_text())))
    outside = [t for t in tokens if not resolves_to(doc, t).is_relative_to(PROJECT_DIR.resolve())]
    assert not outside, f"{name} points outside the repository: {outside}"
    missing = []
    for token in tokens:
        inventories = PROJECT_DIR.glob(f"inventories/*/{token}")
        # A file the operator makes from its example (vault.yml from vault.yml.example) counts as named.
        examples = PROJECT_DIR.glob(f"inventories/*/{token}.example")
        if not resolves_to(doc, token).exists() and not any(inventories) and not any(examples):
            missing.append(token)
    assert not missing, f"{name} names paths that do not exist: {missing}"
