"""The package's layout rules (CONTRIBUTING.md): what the SDK must still offer, which modules
may name a provider, and that the imports form no cycle."""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import inspect
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from singer_sdk import RESTStream, Stream, Tap
from singer_sdk.helpers import _typing as sdk_typing
from singer_sdk.streams import _state as sdk_state

from tap_lms_unified.providers import PROVIDERS
from tests.conftest import ROOT

PACKAGE = ROOT / "tap_lms_unified"
#: Not part of the tap: the fake API of the demo, the tests and the benchmark.
SANDBOX = PACKAGE / "sandbox"
#: The one place that knows each provider.
PROVIDERS_DIR = PACKAGE / "providers"

#: The singer-sdk versions whose private names below were checked against the tap's use.
SDK_CHECKED = ((0, 54, 9), (0, 55))
#: Private SDK names the tap relies on (no public equivalent), by where the SDK has them.
#: After an SDK upgrade, re-read each use before widening SDK_CHECKED.
SDK_PRIVATE = (
    # Full-table syncs stamp RECORDs with the run's table version ...
    (Stream, "_stream_version"),
    # ... and write ACTIVATE_VERSION after the last tenant.
    (Stream, "_write_activate_version_message"),
    # The SDK's switch for request metrics, honoured by the tap's own logging.
    (RESTStream, "_LOG_REQUEST_METRICS"),
    # The SDK's termination handler (registered for SIGTERM/SIGINT), replaced.
    (Tap, "_handle_termination"),
    # The SDK's per-record loop, done in one place on the plain path (the CPU target of
    # issue 12; anything else takes the SDK's own); see SDK_LOOP below ...
    (Stream, "_sync_records"),
    # ... with the SDK's own steps around the records: partition state, signpost ...
    (Stream, "_get_state_partition_context"),
    (Stream, "_write_starting_replication_value"),
    # ... bookmarks (only values that can raise them), finalisation and STATE messages.
    (Stream, "_increment_stream_state"),
    (Stream, "_finalize_state"),
    (Stream, "_write_state_message"),
    # The state manager with indexed partitions (the SDK's scans them: quadratic in
    # tenants), made where the SDK makes its own, from its state.
    (Stream, "_state_manager"),
    (Stream, "_tap_state"),
    (sdk_state, "StreamStateManager"),
    # tests/test_contract.py: the SDK's record conformance, run on spec examples.
    (sdk_typing, "conform_record_data_types"),
)
#: The one module of the package that may use them.
SDK_PRIVATE_MODULE = PACKAGE / "sdk_private.py"


#: sha256 (first 16 hex digits) of the source of the SDK's `Stream._sync_records`, which
#: `LmsStream._sync_records` mirrors step by step: a change there must be mirrored too.
SDK_LOOP = "8928dc7f50e9bf57"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def modules() -> dict[str, Path]:
    """The tap's modules by dotted name (the sandbox left out)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if SANDBOX in path.parents:
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def shared_modules() -> list[Path]:
    """Every module but the provider modules (and the sandbox)."""
    return [path for path in modules().values() if PROVIDERS_DIR not in path.parents]


# --------------------------------------------------------------------------- the SDK


def test_sdk_version_is_one_the_private_names_were_checked_against() -> None:
    version = _version(importlib.metadata.version("singer-sdk"))
    low, high = SDK_CHECKED
    assert low <= version < high, (
        f"singer-sdk {version}: the tap's use of private SDK names was checked for "
        f">={low},<{high}; re-check SDK_PRIVATE's uses, then widen SDK_CHECKED"
    )
    # The package's own requirement admits nothing outside that range either.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (sdk,) = [
        Requirement(r) for r in project["project"]["dependencies"] if r.startswith("singer-sdk")
    ]
    just_below = ".".join(map(str, (*low[:2], low[2] - 1)))
    for outside in (just_below, ".".join(map(str, high))):
        assert not sdk.specifier.contains(outside), f"pyproject.toml admits singer-sdk {outside}"


@pytest.mark.parametrize(("owner", "name"), SDK_PRIVATE, ids=[name for _, name in SDK_PRIVATE])
def test_sdk_still_has_the_private_names_the_tap_uses(owner: object, name: str) -> None:
    if name in ("_stream_version", "_state_manager", "_tap_state"):  # set in __init__
        init = owner.__init__  # type: ignore[misc]
        source = Path(init.__code__.co_filename).read_text(encoding="utf-8")
        assert f"self.{name}" in source, f"singer-sdk no longer sets {name}"
    else:
        assert hasattr(owner, name), f"singer-sdk no longer has {owner}.{name}"


def test_the_sdk_loop_the_tap_mirrors_is_unchanged() -> None:
    source = inspect.getsource(Stream._sync_records)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert digest == SDK_LOOP, (
        "singer-sdk's Stream._sync_records changed: mirror the change in "
        "LmsStream._sync_records (streams.py), then update SDK_LOOP"
    )


def test_sdk_private_names_listed_are_all_the_package_uses() -> None:
    """A private SDK name is used in sdk_private.py only, and listed in SDK_PRIVATE."""
    listed = {name for _, name in SDK_PRIVATE}
    own: set[str] = set()
    used: dict[str, set[Path]] = {}
    for path in modules().values():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name.startswith("_"):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                is_self = isinstance(node.value, ast.Name) and node.value.id == "self"
                if is_self and not node.attr.startswith("__"):
                    used.setdefault(node.attr, set()).add(path)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("singer_sdk"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                module = node.module or ""
                if private or "._" in module:
                    assert path == SDK_PRIVATE_MODULE, f"{path.name}: private SDK import {module}"
                    assert {a.name for a in node.names} <= listed, f"{module}: list it"
    # `self._x` that the package neither defines nor assigns is the SDK's.
    assigned: set[str] = set()
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for item in target.elts if isinstance(target, ast.Tuple) else [target]:
                        if isinstance(item, ast.Attribute):
                            assigned.add(item.attr)
                        elif isinstance(item, ast.Name):  # a class attribute of the package's
                            assigned.add(item.id)
    sdk_names = set(used) - own - (assigned - listed)
    assert sdk_names <= listed, f"private SDK names not in SDK_PRIVATE: {sdk_names - listed}"
    elsewhere = {name: paths - {SDK_PRIVATE_MODULE} for name, paths in used.items()}
    outside = {
        n: sorted(p.name for p in ps) for n, ps in elsewhere.items() if n in sdk_names and ps
    }
    assert not outside, f"private SDK names used outside sdk_private.py: {outside}"


# --------------------------------------------------------------------------- providers


#: Every registered provider's names, as a shared module must not spell them.
PROVIDER_NAMES = re.compile(
    r"\b(" + "|".join(re.escape(n) for p in PROVIDERS.values() for n in {p.name, p.label}) + r")\b",
    re.IGNORECASE,
)


@pytest.mark.parametrize("path", shared_modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_shared_modules_never_name_a_provider(path: Path) -> None:
    """Shared modules learn everything about a provider through `Provider`."""
    text = path.read_text(encoding="utf-8")
    names = sorted({m.group(0) for m in PROVIDER_NAMES.finditer(text)})
    assert not names, f"{path.relative_to(ROOT)} names {names}: move it to its provider module"


# --------------------------------------------------------------------------- imports


def imports_of(name: str, path: Path, known: set[str], *, typing: bool = True) -> set[str]:
    """The package modules a module imports, those under `if TYPE_CHECKING:` included
    (`typing=False`: only when it runs). A type-level cycle is a cycle too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) and not typing:
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {module for module in found if module in known and module != name}


def test_imports_form_no_cycle() -> None:
    found = modules()
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycle = [*trail[trail.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    # The layout of CONTRIBUTING.md: the tap sits on top, the registry below it.
    assert "tap_lms_unified.providers" in graph["tap_lms_unified.tap"]
    # provider.py is the interface: it only knows the paging declarations.
    assert graph["tap_lms_unified.provider"] <= {"tap_lms_unified.paging"}
