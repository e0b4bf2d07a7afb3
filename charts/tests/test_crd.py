"""The ImportJob CRD the chart ships: what it validates. Its CEL rules
(x-kubernetes-validations) are evaluated with a CEL interpreter (cel-python) on specs the API
server must accept and reject — the double in operator/tests/e2e does not evaluate CEL, and
no API server runs here; the operator checks the same keys again before deleting anything
(operator/src/reconcile_tests.rs)."""

from __future__ import annotations

import copy
import re
import uuid

import celpy
import pytest

from conftest import load_yaml

from pathlib import Path

CRD = load_yaml(Path(__file__).resolve().parents[1] / "bulk-import" / "crds" / "importjobs.bulkimport.dev.yaml")
VERSION = CRD["spec"]["versions"][0]
SPEC = VERSION["schema"]["openAPIV3Schema"]["properties"]["spec"]
RULES = SPEC["x-kubernetes-validations"]

USER = "3a7d0c1b-9e2f-4d5a-8b6c-1f0e2d3c4b5a"
JOB = "5f0c6b8e-8a1d-4c55-9f4e-2b7b6f0e9a11"


DROP = object()


def spec(**changes) -> dict:
    s = {
        "jobId": JOB,
        "mode": "insert_only",
        "source": {"key": f"uploads/{USER}/{JOB}.csv", "size": 10, "fileName": "a.csv"},
        "report": {"key": f"reports/{JOB}/errors.csv"},
    }
    for path, value in changes.items():
        if value is DROP:
            del s[path]
            continue
        node = s
        parts = path.split("__")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return s


def evaluate(rule: str, new: dict, old: dict | None) -> bool:
    env = celpy.Environment()
    program = env.program(env.compile(rule))
    activation = {"self": celpy.json_to_cel(new)}
    if old is not None:
        activation["oldSelf"] = celpy.json_to_cel(old)
    try:
        return bool(program.evaluate(activation))
    except celpy.CELEvalError:
        # The API server reports a rule that cannot be evaluated (a field absent) as violated.
        return False


def violations(new: dict, old: dict | None = None) -> list[str]:
    """The messages of the rules a create (old None) or an update violates; like the API
    server, a rule that uses oldSelf is a transition rule and only checked on updates."""
    out = []
    for r in RULES:
        if "oldSelf" in r["rule"] and old is None:
            continue
        if not evaluate(r["rule"], new, old):
            out.append(r["message"])
    # The schema patterns, as the API server checks them before the rules.
    for where, value, pattern in (
        ("jobId", new.get("jobId"), SPEC["properties"]["jobId"]["pattern"]),
        ("source.key", new["source"]["key"], SPEC["properties"]["source"]["properties"]["key"]["pattern"]),
        ("report.key", new.get("report", {}).get("key"), SPEC["properties"]["report"]["properties"]["key"]["pattern"]),
    ):
        if value is not None and not re.search(pattern, value):
            out.append(f"{where}: pattern")
    return out


def test_a_spec_the_api_creates_is_accepted():
    assert violations(spec()) == []
    assert violations(spec(), spec()) == [], "an unchanged spec is a valid update"


@pytest.mark.parametrize(
    "changes, why",
    [
        ({"jobId": "not-a-uuid"}, "jobId: pattern"),
        ({"jobId": JOB.upper()}, "jobId: pattern"),
        # Another import's upload: with OBJECT_RETENTION=delete the finalizer would delete it.
        ({"source__key": f"uploads/{USER}/{uuid.uuid4()}.csv"}, "source.key must be an upload of this job"),
        ({"source__key": f"uploads/../{JOB}.csv"}, "source.key must not have a . or .. segment"),
        ({"source__key": f"orgs/1/inbox/./{JOB}.csv"}, "source.key must not have a . or .. segment"),
        ({"source__key": "/customers.csv"}, "source.key: pattern"),
        ({"source__key": "orgs/1/inbox//customers.csv"}, "source.key: pattern"),
        ({"source__key": "orgs/1/inbox/"}, "source.key: pattern"),
        ({"report__key": f"reports/{uuid.uuid4()}/errors.csv"}, "report.key must be this job's report"),
        ({"report__key": f"uploads/{USER}/{JOB}.csv"}, "report.key: pattern"),
    ],
)
def test_specs_pointing_elsewhere_are_rejected(changes, why):
    found = violations(spec(**changes))
    assert any(why in v for v in found), found


def hand_written(**changes) -> dict:
    """An ImportJob written by hand (issue 25): no jobId, no report, an object in storage."""
    base = {"jobId": DROP, "report": DROP, "source": {"key": "orgs/1/inbox/customers.csv"}}
    return spec(**{**base, **changes})


def test_an_importjob_written_by_hand_and_an_api_import_of_an_object_are_accepted():
    assert violations(hand_written()) == []
    assert violations(hand_written(), hand_written()) == []
    # The API's ImportJob for an object already in storage: its jobId, its report, the key.
    assert violations(spec(source__key="orgs/1/inbox/customers.csv")) == []


@pytest.mark.parametrize(
    "changes, why",
    [
        # Without a jobId no upload can be named: the finalizer could delete someone's.
        ({"source": {"key": f"uploads/{USER}/{JOB}.csv"}}, "source.key must be an upload of this job"),
        ({"report": {"key": f"reports/{JOB}/errors.csv"}}, "jobId and report are set together"),
    ],
)
def test_hand_written_importjobs_cannot_name_the_services_objects(changes, why):
    found = violations(hand_written(**changes))
    assert any(why in v for v in found), found


def test_a_jobid_cannot_be_added_to_or_removed_from_a_hand_written_importjob():
    assert any("immutable" in v for v in violations(spec(), hand_written()))
    assert any("immutable" in v for v in violations(hand_written(), spec()))


@pytest.mark.parametrize(
    "changes",
    [{"mode": "upsert"}, {"source__size": 11}, {"tuning": {"batchSize": 5}}],
)
def test_the_spec_is_immutable(changes):
    old = spec()
    new = spec(**copy.deepcopy(changes))
    assert violations(new) == [], "valid as a new object"
    assert any("immutable" in v for v in violations(new, old))


def test_only_a_cancel_may_change_and_it_cannot_be_withdrawn():
    old = spec()
    cancelled = spec(cancelRequested=True)
    assert violations(cancelled, old) == [], "setting cancelRequested is the one allowed change"
    assert violations(cancelled, cancelled) == []
    withdrawn = spec(cancelRequested=False)
    assert any("cannot be withdrawn" in v for v in violations(withdrawn, cancelled))
    assert any("cannot be withdrawn" in v for v in violations(spec(), cancelled))


def test_retries_may_only_grow():
    """Issue 13: a retry raises spec.retries by one; it cannot be lowered or removed."""
    old = spec()
    once = spec(retries=1)
    assert violations(once, old) == [], "raising retries is allowed"
    assert violations(spec(retries=2), once) == []
    assert violations(once, once) == []
    assert any("can only grow" in v for v in violations(spec(retries=0), once))
    assert any("can only grow" in v for v in violations(spec(), once))
    both = spec(retries=1, cancelRequested=True)
    assert violations(both, old) == []
    assert SPEC["properties"]["retries"]["minimum"] == 0


def test_the_rules_name_the_field_they_check():
    by_path = {r.get("fieldPath") for r in RULES}
    assert {".source.key", ".report.key"} <= by_path
    for r in RULES:
        assert r["message"], r


def test_printer_columns():
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    for name in ("Status", "Mode", "Processed", "Errors", "Progress", "Duration", "Age"):
        assert columns[name].get("priority", 0) == 0, name
    for name in ("Inserted", "Updated", "Started", "Reason"):
        assert columns[name]["priority"] == 1, f"{name}: -o wide only"
    assert columns["Started"]["type"] == "date"
    assert columns["Started"]["jsonPath"] == ".status.startedAt"
    assert columns["Duration"]["jsonPath"] == ".status.duration"
    assert columns["Inserted"]["jsonPath"] == ".status.insertedRows"
    assert columns["Updated"]["jsonPath"] == ".status.updatedRows"
