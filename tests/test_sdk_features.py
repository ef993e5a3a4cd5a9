"""The SDK's catalog selection and stream maps still apply to the tap's fast record path."""

from __future__ import annotations

import hashlib
import json
import typing as t

from tests.conftest import KOMBO_TENANT, kombo_config, run_cli


def sync(tmp_path, config: dict, catalog: dict | None = None) -> list[dict]:
    run = run_cli(config, tmp_path, catalog=catalog, name="sync")
    assert run.returncode == 0, run.stderr[-2000:]
    return run.messages


def discover(tmp_path, config: dict) -> dict:
    run = run_cli(config, tmp_path, args=["--discover"], name="discover")
    assert run.returncode == 0, run.stderr[-2000:]
    return t.cast("dict", json.loads(run.stdout))


def test_catalog_deselects_streams_and_properties(sandbox, tmp_path):
    config = kombo_config(sandbox)
    catalog = discover(tmp_path, config)
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = entry["tap_stream_id"] == "users"
            if item["breadcrumb"] == ["properties", "work_email"]:
                item["metadata"]["selected"] = False
    messages = sync(tmp_path, config, catalog)
    records = [m for m in messages if m["type"] == "RECORD"]
    assert {m["stream"] for m in records} == {"users"}
    assert len(records) == len(sandbox.records("kombo", KOMBO_TENANT, "users"))
    assert all("work_email" not in m["record"] for m in records)
    assert all("first_name" in m["record"] for m in records)
    (schema,) = [m for m in messages if m["type"] == "SCHEMA"]
    assert "work_email" not in schema["schema"]["properties"]


def test_stream_maps_filter_alias_and_hash(sandbox, tmp_path):
    config = kombo_config(
        sandbox,
        stream_maps={
            "users": {
                "__alias__": "learners",
                "__filter__": "status == 'ACTIVE'",
                "email_hash": "md5(work_email) if work_email else None",
                "work_email": None,
            },
            "progress": None,
        },
    )
    messages = sync(tmp_path, config)
    streams = {m["stream"] for m in messages if m["type"] == "RECORD"}
    assert "learners" in streams
    assert "users" not in streams
    assert "progress" not in streams
    learners = [
        m["record"] for m in messages if m["type"] == "RECORD" and m["stream"] == "learners"
    ]
    stored = {u["id"]: u for u in sandbox.records("kombo", KOMBO_TENANT, "users")}
    assert {r["id"] for r in learners} == {i for i, u in stored.items() if u["status"] == "ACTIVE"}
    for record in learners:
        assert "work_email" not in record
        email = stored[record["id"]]["work_email"]
        expected = hashlib.md5(email.encode()).hexdigest() if email else None
        assert record["email_hash"] == expected
    state = [m for m in messages if m["type"] == "STATE"][-1]["value"]
    assert "users" in state["bookmarks"]  # state keeps the stream's own name
