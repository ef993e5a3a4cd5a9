"""End to end: sandbox API -> `meltano run tap-lms-unified target-postgres` -> PostgreSQL.

Real Meltano (scripts/meltano-env installs it and the plugins), a throwaway PostgreSQL
cluster (tests/pg.py), and the sandbox in-process. Each test gets its own database, its
own Meltano state id and a Meltano system database of this module, so nothing here
touches the state of scripts/demo.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import typing as t
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml
from psycopg import sql

from tap_lms_unified.sandbox import Fault, Sandbox
from tap_lms_unified.tap import TapLmsUnified
from tests.conftest import (
    BINDBEE_STREAMS,
    BINDBEE_TOKEN,
    KOMBO_STREAMS,
    KOMBO_TENANT,
    bindbee_config,
    kombo_config,
)
from tests.pg import ClusterError, PostgresCluster

ROOT = Path(__file__).resolve().parent.parent
MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"
SECRETS = ("sandbox-api-key", BINDBEE_TOKEN)
BINDBEE_CONNECTOR = "acme"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def meltano_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Meltano and its plugins installed; the environment every meltano call gets."""
    setup = subprocess.run(
        [str(ROOT / "scripts" / "meltano-env")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if setup.returncode != 0:
        pytest.fail(
            f"scripts/meltano-env failed (exit {setup.returncode}):\n{setup.stderr[-3000:]}",
            pytrace=False,
        )
    system_db = tmp_path_factory.mktemp("meltano") / "meltano.db"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TAP_LMS_UNIFIED", "TARGET_POSTGRES", "MELTANO_", "LMS_SANDBOX"))
    }
    env.update(
        MELTANO_PROJECT_ROOT=str(ROOT),
        MELTANO_ENVIRONMENT="sandbox",
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        MELTANO_DATABASE_URI=f"sqlite:///{system_db}",
        NO_COLOR="1",
    )
    return env


@pytest.fixture(scope="module")
def pg() -> t.Iterator[PostgresCluster]:
    """A throwaway cluster for the module; a failure to start it fails the tests."""
    cluster = PostgresCluster()
    try:
        cluster.start()
    except ClusterError as exc:
        pytest.fail(f"could not start a throwaway PostgreSQL cluster: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


class Pipeline:
    """`meltano run <extractor> target-postgres` into one database, with one state id."""

    def __init__(
        self,
        extractor: str,
        env: dict[str, str],
        pg: PostgresCluster,
        sb: Sandbox,
        schema: str,
    ) -> None:
        self.extractor = extractor
        self.schema = schema
        self.suffix = f"test-{uuid.uuid4().hex[:12]}"
        self.state_id = f"sandbox:{extractor}-to-target-postgres:{self.suffix}"
        self.database = f"lms_{uuid.uuid4().hex[:12]}"
        pg.create_database(self.database)
        self.pg = pg
        self.env = {**env, **pg.target_env(self.database), "LMS_SANDBOX_URL": sb.url}

    def meltano(
        self, *args: str, timeout: float = 300, expect_failure: bool = False
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(MELTANO), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = summarise(done.stdout + done.stderr)
        if expect_failure:
            assert done.returncode != 0, f"meltano {' '.join(args)} should have failed:\n{output}"
        elif done.returncode != 0:
            pytest.fail(
                f"meltano {' '.join(args)} failed (exit {done.returncode}):\n{output}",
                pytrace=False,
            )
        return done

    def run(self, *, expect_failure: bool = False) -> None:
        self.meltano(
            "run",
            "--state-id-suffix",
            self.suffix,
            self.extractor,
            "target-postgres",
            expect_failure=expect_failure,
        )

    def state(self) -> dict:
        """`meltano state get`: the JSON on stdout (the log goes to stderr)."""
        value: dict = json.loads(self.meltano("state", "get", self.state_id).stdout)
        return value

    def query(self, query: str | sql.Composable, *params: t.Any) -> list[tuple]:
        with self.pg.connect(self.database) as conn:
            return list(conn.execute(query, params or None).fetchall())

    def table(self, name: str) -> sql.Composable:
        return sql.Identifier(self.schema, name)

    def count(self, table: str, where: str = "true") -> int:
        rows = self.query(
            sql.SQL("SELECT count(*) FROM {} WHERE " + where).format(self.table(table))
        )
        return int(rows[0][0])

    def rows_by_key(self, table: str, key: str, columns: t.Sequence[str]) -> dict[str, tuple]:
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in (key, *columns))
        rows = self.query(sql.SQL("SELECT {} FROM {}").format(cols, self.table(table)))
        return {row[0]: tuple(row[1:]) for row in rows}

    def column_types(self, table: str) -> dict[str, str]:
        """Column name -> data_type (arrays: `ARRAY of <udt_name>`), information_schema."""
        rows = self.query(
            "SELECT column_name, data_type, udt_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s",
            self.schema,
            table,
        )
        return {
            name: f"ARRAY of {udt}" if data_type == "ARRAY" else data_type
            for name, data_type, udt in rows
        }


def summarise(output: str) -> str:
    """The error lines of a meltano log (plugins' ones included), then its end."""
    errors = [
        line[:400]
        for line in output.splitlines()
        if re.search(r"\[error|\[critical|Error\b|Exception\b", line)
        and "Task exception was never retrieved" not in line
    ]
    return "\n".join(["-- error lines:", *errors[:40], "-- end of the log:", output[-2500:]])


# ---------------------------------------------------------------- checks


def expected_pg_type(prop: dict) -> str | None:
    """The column type target-postgres 0.8 must create for a JSON schema property.

    As `data_type` or, for arrays, `ARRAY of <udt_name>` from information_schema. None
    when the property has no single type (e.g. a "value" of any JSON type).
    """
    types = prop.get("type")
    if types is None:
        return None
    kinds = [types] if isinstance(types, str) else [k for k in types if k != "null"]
    if len(kinds) != 1:
        return None
    kind = kinds[0]
    if kind == "string" and prop.get("format") == "date-time":
        return "timestamp without time zone"
    if kind == "array":
        # Arrays become Postgres arrays of the item type: objects -> jsonb[] (_jsonb).
        item = expected_pg_type(prop.get("items") or {})
        udt = {"jsonb": "_jsonb", "bigint": "_int8", "numeric": "_numeric"}.get(item or "")
        return f"ARRAY of {udt}" if udt else "ARRAY"
    return {
        "object": "jsonb",
        "integer": "bigint",
        "number": "numeric",
        "boolean": "boolean",
    }.get(kind)


def check_tables(
    pipe: Pipeline, tap: TapLmsUnified, expected_counts: dict[str, int]
) -> dict[str, int]:
    """Row counts, unique keys and column types of every stream's table."""
    checked: Counter = Counter()
    counts = {}
    for name, expected in expected_counts.items():
        stream = tap.streams[name]
        counts[name] = pipe.count(name)
        assert counts[name] == expected, f"{name}: {counts[name]} rows, sandbox has {expected}"
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in stream.primary_keys)
        duplicates = pipe.query(
            sql.SQL("SELECT {k}, count(*) FROM {t} GROUP BY {k} HAVING count(*) > 1").format(
                k=keys, t=pipe.table(name)
            )
        )
        assert not duplicates, f"{name}: duplicate primary keys {duplicates[:5]}"
        nulls = pipe.count(name, " OR ".join(f'"{k}" IS NULL' for k in stream.primary_keys))
        assert nulls == 0, f"{name}: {nulls} rows with a null primary key"
        types = pipe.column_types(name)
        for prop_name, prop in stream.schema["properties"].items():
            want = expected_pg_type(prop)
            if want is None:
                continue
            assert prop_name in types, f"{name}.{prop_name}: no such column ({sorted(types)})"
            got = types[prop_name]
            if want == "ARRAY":  # an array of strings etc.: any element type
                got = got.split(" of ")[0]
            assert got == want, (
                f"{name}.{prop_name}: column type {types[prop_name]}, expected {want} for {prop}"
            )
            checked[want] += 1
        for meta in ("_sdc_deleted_at", "_sdc_extracted_at", "_sdc_batched_at"):
            assert types.get(meta) == "timestamp without time zone", f"{name}.{meta}: {types}"
    # Not a vacuous pass: the typed columns were there.
    assert checked["timestamp without time zone"], checked
    assert checked["jsonb"] + checked["ARRAY of _jsonb"], checked
    return counts


def bookmark(state: dict, stream: str) -> str | None:
    """A stream's latest bookmark, kept for the stream or for its (tenant) partitions."""
    entry = state.get("singer_state", {}).get("bookmarks", {}).get(stream, {})
    values = [entry.get("replication_key_value")]
    values += [p.get("replication_key_value") for p in entry.get("partitions") or ()]
    found = [v for v in values if v]
    return max(found) if found else None


def check_state(pipe: Pipeline, bookmarked: t.Sequence[str]) -> dict:
    """The state Meltano keeps: bookmarks for incremental streams, and no secret."""
    state = pipe.state()
    text = json.dumps(state)
    for secret in SECRETS:
        assert secret not in text, "a secret was stored in the Meltano state"
    for name in bookmarked:
        value = bookmark(state, name)
        assert value, f"no bookmark for {name} in {text[:500]}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", value), value
    return state


def kombo_expectations(sb: Sandbox) -> tuple[dict[str, int], dict[str, int]]:
    """(rows, soft-deleted rows) per table, from what the sandbox holds."""
    users = sb.records("kombo", KOMBO_TENANT, "users")
    courses = sb.records("kombo", KOMBO_TENANT, "courses")
    progressions = sb.records("kombo", KOMBO_TENANT, "course-progressions")
    skills = sb.records("kombo", KOMBO_TENANT, "skills")
    revisions = [(r, c) for c in courses for r in c.get("revisions") or ()]

    def deleted(records: list[dict]) -> int:
        return sum(1 for r in records if r.get("remote_deleted_at"))

    rows = {
        "users": len(users),
        "progress": sum(len(u.get("progress") or ()) for u in users),
        "course_progressions": len(progressions),
        "courses": len(courses),
        "course_revisions": len(revisions),
        "skills": len(skills),
    }
    soft_deleted = {
        "users": deleted(users),
        "progress": sum(len(u.get("progress") or ()) for u in users if u["remote_deleted_at"]),
        "course_progressions": deleted(progressions),
        "courses": deleted(courses),
        "course_revisions": sum(
            1 for r, c in revisions if r.get("remote_deleted_at") or c.get("remote_deleted_at")
        ),
        "skills": deleted(skills),
    }
    return rows, soft_deleted


# ---------------------------------------------------------------- tests


@pytest.mark.meltano
def test_meltano_yml_declares_the_tap() -> None:
    """meltano.yml keeps up with the tap: every setting, the secrets, the capabilities."""
    about = json.loads(
        subprocess.run(
            [sys.executable, "-m", "tap_lms_unified", "--about", "--format=json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    extractors = {p["name"]: p for p in project["plugins"]["extractors"]}
    tap = extractors["tap-lms-unified--base"]
    assert tap["namespace"] == "tap_lms_unified__base"
    assert tap["pip_url"] == "-e ."
    assert tap["executable"] == "tap-lms-unified"
    assert sorted(tap["capabilities"]) == sorted(about["capabilities"])
    declared = {setting["name"]: setting for setting in tap["settings"]}
    properties = about["settings"]["properties"]
    assert sorted(declared) == sorted(properties), "meltano.yml settings differ from the tap's"
    for name, setting in declared.items():
        assert setting.get("label"), f"{name}: no label"
        assert setting.get("description"), f"{name}: no description"
        assert setting.get("kind") != "password", f"{name}: use `sensitive: true`"
        secret = '"secret": true' in json.dumps(properties[name])  # nested ones too
        assert bool(setting.get("sensitive")) == secret, f"{name}: sensitive should be {secret}"
    assert declared["api_key"]["sensitive"]
    assert declared["connector_token"]["sensitive"]
    assert "config" not in tap, "the shared definition must set nothing one provider lacks"
    # Siblings: an inheriting plugin gets its parent's whole configuration.
    for name, provider in (("tap-lms-unified", "kombo"), ("tap-lms-unified--bindbee", "bindbee")):
        assert extractors[name]["inherit_from"] == "tap-lms-unified--base", name
        assert extractors[name]["config"] == {"provider": provider}, name
        assert extractors[name]["load_schema"] == provider, name
    assert project["default_environment"] == "sandbox"


# The README's prod example: each extractor's variables, and only those, reach it.
PROD_ENV = {
    "TAP_LMS_UNIFIED_API_KEY": "kombo-api-key",
    "TAP_LMS_UNIFIED_INTEGRATION_ID": "docebo:8Xi6",
    "TAP_LMS_UNIFIED__BINDBEE_API_KEY": "bindbee-api-key",
    "TAP_LMS_UNIFIED__BINDBEE_CONNECTOR_TOKEN": "bindbee-connector-token",
}
PROD_CONFIG = {
    "tap-lms-unified": {
        "provider": "kombo",
        "api_key": "kombo-api-key",
        "integration_id": "docebo:8Xi6",
    },
    "tap-lms-unified--bindbee": {
        "provider": "bindbee",
        "api_key": "bindbee-api-key",
        "connector_token": "bindbee-connector-token",
    },
}


def plain_meltano(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`meltano ...` found on PATH, as the README runs it (no wrapper script)."""
    env = {**env, "PATH": f"{MELTANO.parent}{os.pathsep}{env.get('PATH', '')}"}
    env.pop("MELTANO_PROJECT_ROOT", None)
    env.pop("MELTANO_ENVIRONMENT", None)
    done = subprocess.run(
        ["meltano", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"meltano {' '.join(args)}:\n{summarise(done.stderr)}"
    return done


def test_readme_prod_example_names_these_variables() -> None:
    section = (ROOT / "README.md").read_text().split("## Meltano and PostgreSQL")[1]
    section = section.split("\n## ")[0]
    exported = set(re.findall(r"\b(TAP_LMS_UNIFIED\w*)=", section))
    assert exported == set(PROD_ENV)
    for extractor in PROD_CONFIG:
        assert f"meltano --environment=prod config print {extractor} " in section
        assert f"meltano --environment=prod run {extractor} target-postgres" in section


@pytest.mark.meltano
def test_prod_config_reaches_its_own_extractor_only(meltano_env: dict[str, str]) -> None:
    """`meltano config print` shows what each tap gets; the Bindbee tap warns of nothing.

    Inheriting from the Kombo extractor, the Bindbee one got TAP_LMS_UNIFIED_INTEGRATION_ID
    (and TAP_LMS_UNIFIED_API_KEY when its own key was unset), and its tap logged "Setting
    'integration_id' applies to the other provider".
    """
    env = {**meltano_env, **PROD_ENV}
    for extractor, expected in PROD_CONFIG.items():
        printed = plain_meltano(env, "--environment=prod", "config", "--unsafe", "print", extractor)
        assert json.loads(printed.stdout) == expected, extractor
        redacted = json.loads(
            plain_meltano(env, "--environment=prod", "config", "print", extractor).stdout
        )
        assert sorted(redacted) == sorted(expected), extractor
        # --discover validates the configuration (and logs its warnings) without a request;
        # --about does not validate.
        log = plain_meltano(env, "--environment=prod", "invoke", extractor, "--discover").stderr
        assert "applies to the other provider" not in log, log[-2000:]
        assert not re.search(r"\[(warning|error)", log), log[-2000:]
    # A Bindbee key left unset stays unset: the Kombo key is not inherited.
    del env["TAP_LMS_UNIFIED__BINDBEE_API_KEY"]
    printed = plain_meltano(
        env, "--environment=prod", "config", "--unsafe", "print", "tap-lms-unified--bindbee"
    )
    assert "api_key" not in json.loads(printed.stdout)


@pytest.mark.postgres
@pytest.mark.meltano
def test_kombo_full_then_incremental(
    meltano_env: dict[str, str], pg: PostgresCluster, sandbox: Sandbox
) -> None:
    tap = TapLmsUnified(config=kombo_config(sandbox), validate_config=False)
    pipe = Pipeline("tap-lms-unified", meltano_env, pg, sandbox, schema="kombo")

    # 1. First run: everything, soft-deleted records included (include_deleted default).
    pipe.run()
    rows, soft_deleted = kombo_expectations(sandbox)
    assert rows["progress"] > 0, "the sandbox should serve the legacy users with progress[]"
    assert sum(soft_deleted.values()) > 0, "the sandbox should hold some deleted records"
    counts = check_tables(pipe, tap, rows)
    for name, expected in soft_deleted.items():
        marked = pipe.count(name, "_sdc_deleted_at IS NOT NULL")
        assert marked == expected, f"{name}: {marked} rows soft-deleted, sandbox has {expected}"
    first_state = check_state(pipe, KOMBO_STREAMS)
    first_batch = pipe.query(
        sql.SQL("SELECT max(_sdc_batched_at) FROM {}").format(pipe.table("users"))
    )[0][0]

    # 2. The source changes: some users and progressions change, some users are deleted.
    users_before = pipe.rows_by_key("users", "id", ["changed_at", "first_name", "status"])
    changed_users = sandbox.mutate("kombo", KOMBO_TENANT, "users", change=4, delete=3)
    changed_progressions = sandbox.mutate(
        "kombo", KOMBO_TENANT, "course-progressions", change=5, delete=2
    )
    pipe.run()
    rows, soft_deleted = kombo_expectations(sandbox)
    assert check_tables(pipe, tap, rows) == counts, "the incremental run added rows"
    for name, expected in soft_deleted.items():
        marked = pipe.count(name, "_sdc_deleted_at IS NOT NULL")
        assert marked == expected, f"{name}: {marked} rows soft-deleted, sandbox has {expected}"

    # Upserted: the new values are in the table.
    source = {u["id"]: u for u in sandbox.records("kombo", KOMBO_TENANT, "users")}
    users_after = pipe.rows_by_key(
        "users", "id", ["changed_at", "first_name", "status", "_sdc_deleted_at"]
    )
    for user_id in changed_users["changed"] + changed_users["deleted"]:
        after = users_after[user_id]
        assert after[:3] != users_before[user_id], f"user {user_id} was not updated"
        assert after[0].isoformat(timespec="milliseconds") + "Z" == source[user_id]["changed_at"]
        assert after[1] == source[user_id]["first_name"]
        assert after[2] == source[user_id]["status"]
    for user_id in changed_users["deleted"]:
        deleted_at = users_after[user_id][3]
        assert deleted_at is not None, f"deleted user {user_id} not soft-deleted"
        assert (
            deleted_at.isoformat(timespec="milliseconds") + "Z"
            == source[user_id]["remote_deleted_at"]
        )
        progress_rows = pipe.query(
            sql.SQL("SELECT count(*), count(_sdc_deleted_at) FROM {} WHERE user_id = %s").format(
                pipe.table("progress")
            ),
            user_id,
        )[0]
        assert progress_rows[0] == progress_rows[1], "progress of a deleted user not deleted"
    for user_id in changed_users["changed"]:
        assert users_after[user_id][3] is None, f"changed user {user_id} marked deleted"
    progressions = pipe.rows_by_key("course_progressions", "id", ["_sdc_deleted_at"])
    for pid in changed_progressions["deleted"]:
        assert progressions[pid][0] is not None, f"deleted progression {pid} not soft-deleted"

    # Incremental: only a few users were written again (changed, deleted, the lookback edge).
    rewritten = pipe.count("users", f"_sdc_batched_at > '{first_batch.isoformat()}'")
    assert len(changed_users["changed"] + changed_users["deleted"]) <= rewritten
    assert rewritten < rows["users"] // 2, f"{rewritten} of {rows['users']} users re-read"

    second_state = check_state(pipe, KOMBO_STREAMS)
    for name in ("users", "course_progressions"):
        moved = (bookmark(first_state, name) or "") < (bookmark(second_state, name) or "")
        assert moved, f"{name}: the bookmark did not move"


@pytest.mark.postgres
@pytest.mark.meltano
def test_bindbee_vanished_records_are_soft_deleted(
    meltano_env: dict[str, str], pg: PostgresCluster, sandbox: Sandbox
) -> None:
    tap = TapLmsUnified(config=bindbee_config(sandbox), validate_config=False)
    pipe = Pipeline("tap-lms-unified--bindbee", meltano_env, pg, sandbox, schema="bindbee")

    def expected() -> dict[str, int]:
        return {m: len(sandbox.records("bindbee", BINDBEE_CONNECTOR, m)) for m in BINDBEE_STREAMS}

    # 1. First run: every record, none deleted.
    pipe.run()
    first = expected()
    counts = check_tables(pipe, tap, first)
    for name in BINDBEE_STREAMS:
        assert pipe.count(name, "_sdc_deleted_at IS NOT NULL") == 0, name
    check_state(pipe, ())

    # 2. Records vanish from the API (Bindbee has no tombstones) and others change.
    users = sandbox.mutate("bindbee", BINDBEE_CONNECTOR, "users", change=3, delete=4)
    enrollments = sandbox.mutate("bindbee", BINDBEE_CONNECTOR, "enrollments", delete=5)
    pipe.run()
    assert expected()["users"] == first["users"] - 4
    # The vanished rows stay in the table, soft-deleted (hard_delete: false).
    assert check_tables(pipe, tap, first) == counts
    for name, gone in (("users", users["deleted"]), ("enrollments", enrollments["deleted"])):
        rows = pipe.rows_by_key(name, "id", ["_sdc_deleted_at"])
        still_there = {r["id"] for r in sandbox.records("bindbee", BINDBEE_CONNECTOR, name)}
        marked = {key for key, (deleted_at,) in rows.items() if deleted_at is not None}
        assert marked == set(gone), (
            f"{name}: soft-deleted {sorted(marked)[:10]}, removed from the API {gone}"
        )
        assert not marked & still_there
    for name in ("completions", "courses", "contents", "skills", "categories"):
        assert pipe.count(name, "_sdc_deleted_at IS NOT NULL") == 0, name

    # The changed users carry their new values.
    source = {u["id"]: u for u in sandbox.records("bindbee", BINDBEE_CONNECTOR, "users")}
    after = pipe.rows_by_key("users", "id", ["first_name", "last_name", "status", "modified_at"])
    for user_id in users["changed"]:
        user = source[user_id]
        assert after[user_id][:3] == (user["first_name"], user["last_name"], user["status"])
    check_state(pipe, ())


@pytest.mark.postgres
@pytest.mark.meltano
def test_bindbee_failed_run_soft_deletes_nothing(
    meltano_env: dict[str, str], pg: PostgresCluster, sandbox: Sandbox
) -> None:
    """A run that fails half-way marks nothing deleted.

    ACTIVATE_VERSION must come after a full table's last record: target-postgres
    soft-deletes every row of an older version the moment it gets the message, so sent
    first (as the SDK does by default) it would mark the whole table deleted and leave the
    rows not re-read before the failure marked, though they are still in the source.
    """
    pipe = Pipeline("tap-lms-unified--bindbee", meltano_env, pg, sandbox, schema="bindbee")
    pipe.env["TAP_LMS_UNIFIED__BINDBEE_PAGE_SIZE"] = "10"
    pipe.run()
    users = len(sandbox.records("bindbee", BINDBEE_CONNECTOR, "users"))
    assert pipe.count("users") == users
    # The next run fails on the third page of users (an API key revoked mid-run, say).
    sandbox.inject(
        Fault(kind="status", provider="bindbee", path="/users", after=2, status=401, times=None)
    )
    pipe.run(expect_failure=True)
    assert len(sandbox.records("bindbee", BINDBEE_CONNECTOR, "users")) == users
    marked = pipe.count("users", "_sdc_deleted_at IS NOT NULL")
    assert marked == 0, f"{marked} of {users} users soft-deleted though none left the source"


# ---------------------------------------------------------------- object nulls

# Tables whose rows are the API's records (same id), and the sandbox model behind each.
OBJECT_TABLES = {
    "kombo": {
        "users": "users",
        "courses": "courses",
        "skills": "skills",
        "course_progressions": "course-progressions",
    },
    "bindbee": {name: name for name in BINDBEE_STREAMS},
}


def object_columns(schema: dict) -> list[str]:
    """The properties target-postgres stores as jsonb (object-typed)."""
    found = []
    for name, prop in schema["properties"].items():
        types = prop.get("type")
        if "object" in ([types] if isinstance(types, str) else types or []):
            found.append(name)
    return found


def sent_by_api(provider: str, record: dict, column: str) -> t.Any:
    """The value the API serves the tap (Bindbee sends raw_data only when asked)."""
    if provider == "bindbee" and column == "raw_data":
        return None  # include_raw_data is off by default
    return record.get(column)


def check_object_nulls(
    pipe: Pipeline, tap: TapLmsUnified, sb: Sandbox, provider: str, tenant: str
) -> Counter:
    """Rows whose object the API sent as null hold JSON null ('null'::jsonb), not SQL NULL.

    target-postgres 0.8 binds every object column as SQLAlchemy JSONB(none_as_null=False),
    so a null (or absent) object becomes JSON null, and the README says so. The README's
    query, `NULLIF(col, 'null'::jsonb) IS NULL`, finds exactly the rows the API sent null.
    """
    totals: Counter = Counter()
    for table, model in OBJECT_TABLES[provider].items():
        records = {r["id"]: r for r in sb.records(provider, tenant, model)}
        for column in object_columns(tap.streams[table].schema):
            rows = pipe.query(
                sql.SQL("SELECT id, {c} IS NULL, jsonb_typeof({c}) FROM {t}").format(
                    c=sql.Identifier(column), t=pipe.table(table)
                )
            )
            sql_null = {key for key, is_null, _ in rows if is_null}
            json_null = {key for key, _, kind in rows if kind == "null"}
            sent_null = {k for k, r in records.items() if sent_by_api(provider, r, column) is None}
            documented = pipe.query(
                sql.SQL("SELECT id FROM {t} WHERE NULLIF({c}, 'null'::jsonb) IS NULL").format(
                    c=sql.Identifier(column), t=pipe.table(table)
                )
            )
            label = f"{table}.{column}"
            assert not sql_null, f"{label}: SQL NULL in {len(sql_null)} rows: update the README"
            assert json_null == sent_null, f"{label}: JSON null {len(json_null)}, API {sent_null}"
            assert {key for (key,) in documented} == sent_null, label
            totals["rows"] += len(rows)
            totals["api null"] += len(sent_null)
            totals["IS NULL"] += len(sql_null)
            totals["= 'null'::jsonb"] += len(json_null)
    return totals


# provider -> (extractor, tenant, the table and object column the API then nulls)
NULLED_OBJECT = {
    "kombo": ("tap-lms-unified", KOMBO_TENANT, "users", "remote_data"),
    "bindbee": ("tap-lms-unified--bindbee", BINDBEE_CONNECTOR, "users", "custom_fields"),
}


@pytest.mark.postgres
@pytest.mark.meltano
@pytest.mark.parametrize("provider", sorted(NULLED_OBJECT))
def test_null_objects_land_as_json_null(
    meltano_env: dict[str, str], pg: PostgresCluster, sandbox: Sandbox, provider: str
) -> None:
    extractor, tenant, table, column = NULLED_OBJECT[provider]
    config = (kombo_config if provider == "kombo" else bindbee_config)(sandbox)
    tap = TapLmsUnified(config=config, validate_config=False)
    pipe = Pipeline(extractor, meltano_env, pg, sandbox, schema=provider)
    pipe.run()
    first = check_object_nulls(pipe, tap, sandbox, provider, tenant)
    assert 0 < first["api null"] < first["rows"], first

    # The API nulls objects that had a value: the upsert replaces them (the old object is
    # not kept), with JSON null again.
    had_value = sorted(r["id"] for r in sandbox.records(provider, tenant, table) if r[column])
    nulled = had_value[:3]
    assert len(nulled) == 3
    sandbox.set_fields(provider, tenant, table, nulled, {column: None})
    pipe.run()
    second = check_object_nulls(pipe, tap, sandbox, provider, tenant)
    assert second["api null"] == first["api null"] + 3, (first, second)
    after = pipe.query(
        sql.SQL("SELECT id, {c}::text FROM {t} WHERE id = ANY(%s)").format(
            c=sql.Identifier(column), t=pipe.table(table)
        ),
        nulled,
    )
    assert sorted(after) == [(key, "null") for key in nulled]
    print(f"\n{provider} object columns: first run {dict(first)}, after nulling {dict(second)}")
