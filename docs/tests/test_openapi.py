"""docs/openapi.json, the committed OpenAPI document (kept equal to what the API serves by
api/tests/it/contracts.rs), is a valid OpenAPI 3.1 document, and its closed sets of strings are
enums a client generator can use."""

import json

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from docscheck import ROOT


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads((ROOT / "docs" / "openapi.json").read_text())


def test_the_document_is_valid_openapi(document):
    validate(document)


def test_the_validator_rejects_a_broken_document(document):
    broken = json.loads(json.dumps(document))
    broken["paths"]["/imports"]["post"]["responses"] = "not an object"
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_codes_statuses_and_modes_are_enums(document):
    schemas = document["components"]["schemas"]
    codes = schemas["ErrorBody"]["properties"]["code"]["enum"]
    assert "invalid_email" in codes and "too_many_uploads" in codes
    assert schemas["JobView"]["properties"]["status"]["enum"] == [
        "queued", "pending", "processing", "done", "failed", "cancelled"]
    assert schemas["JobView"]["properties"]["mode"]["enum"] == ["insert_only", "upsert"]


def test_every_code_is_in_the_api_docs(document):
    api_md = (ROOT / "docs" / "api.md").read_text()
    for code in document["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]:
        assert f"| `{code}` |" in api_md, code
