"""The code map holds (issue 18): storage/ is split by concern into small modules, and it is the only place
that speaks SQL. A module that grows past the limit, or SQL that leaks into gateway/, fails here first."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORAGE_MODULE_MAX_LINES = 450
GATEWAY_MODULE_MAX_LINES = 450
# gateway/ modules at or past the limit today, each with its reason; a new one must be split instead.
GATEWAY_LONG_MODULES = {
    # One SMTP server: the aiosmtpd handler's hooks, each limit with its RFC, and the group commit they
    # share; split it and the envelope checks lose sight of the answers they give.
    "gateway/smtp.py": "the SMTP handler and its limits, one protocol",
    # Configuration has one home (STYLE.md): every key, its default and its check, in one place.
    "gateway/config.py": "every configuration key in one documented home",
}
SQL_PACKAGES = ("sqlalchemy", "sqlmodel", "sqlite3", "psycopg")

# Known exceptions outside storage/, each with its reason; anything else is a leak.
ALLOWED_SQL_IMPORTS: dict[str, set[str]] = {
    # The CLI turns any store error into an operator message and exit code: opening the store for a
    # command, and serve/reprocess, which reach the store outside that.
    "gateway/cli/common.py": {"sqlalchemy.exc"},
    "gateway/cli/operations.py": {"sqlalchemy.exc"},
    # [store] url is validated, and its password masked, with SQLAlchemy's own URL parser.
    "gateway/config.py": {"sqlalchemy.engine", "sqlalchemy.exc"},
    # `Engine` as a type hint only (the composition root hands one engine to the store's parts).
    "gateway/assembly.py": {"sqlalchemy.Engine"},
    # The benchmark's preload and probe read the SQLite file directly, beside the gateway under test; the
    # preload fills PostgreSQL with the server's own generate_series (bench.desk, issue 20).
    "bench/preload.py": {"sqlite3", "sqlalchemy.text"},
    "bench/store_probe.py": {"sqlite3"},
}


def _sql_imports(path: Path) -> set[str]:
    """What `path` imports from SQL packages: `pkg.module` for `import`, `pkg.module.Name` for a name
    taken from the package root (so a type imported for hints is told apart from a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] in SQL_PACKAGES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in SQL_PACKAGES:
                continue
            if "." in node.module:
                found.add(node.module)
            else:
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_every_storage_module_stays_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "storage").glob("*.py")}
    too_long = {name: n for name, n in sizes.items() if n >= STORAGE_MODULE_MAX_LINES}
    assert not too_long, f"split these by concern: {too_long}"


def test_every_gateway_module_stays_small() -> None:
    """gateway/ and its subpackages, by the rule storage/ keeps: gateway/cli/ is one module per concern."""
    paths = (ROOT / "gateway").rglob("*.py")
    sizes = {path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines()) for path in paths}
    too_long = {
        name: n
        for name, n in sizes.items()
        if n >= GATEWAY_MODULE_MAX_LINES and name not in GATEWAY_LONG_MODULES
    }
    assert not too_long, f"split these by concern: {too_long}"
    assert any(name.startswith("gateway/cli/") for name in sizes), "subpackages are measured too"


def test_only_storage_speaks_sql() -> None:
    leaks: dict[str, set[str]] = {}
    for package in ("gateway", "parsers", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            extra = _sql_imports(path) - ALLOWED_SQL_IMPORTS.get(name, set())
            if extra:
                leaks[name] = extra
    assert not leaks, f"SQL outside storage/: {leaks}"


def test_the_store_facade_stays_a_facade() -> None:
    lines = len((ROOT / "storage" / "store.py").read_text().splitlines())
    assert lines < 120, "storage/store.py composes the parts; put new behaviour in the part it belongs to"
