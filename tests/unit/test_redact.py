"""pipeline/redact.py and pipeline/credentials.py: a password or token never reaches a recorded or printed line."""

from __future__ import annotations

import os

import pytest

from pipeline.credentials import is_auth_failure, strip_credentials
from pipeline.redact import redact_text, redact_uri


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://user:s3cret@host:5000/path", "http://user:***@host:5000/path"),
        ("https://tok3n@host", "https://***@host"),
        ("https://host/x?token=s3cret&a=1", "https://host/x?token=***&a=1"),
        ("http://u:p%40ss@host", "http://u:***@host"),
        ("http://host:5000", "http://host:5000"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("databricks", "databricks"),
        ("", ""),
    ],
)
def test_redact_uri(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_redact_text_hides_every_uri_in_a_line() -> None:
    line = "cannot reach http://a:s3cret@h1/x (then https://tok3n@h2/?password=pw9 too)"
    hidden = redact_text(line)
    assert all(secret not in hidden for secret in ("s3cret", "tok3n", "pw9"))
    assert "http://a:***@h1/x" in hidden and "h2" in hidden


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.setenv(name, "")  # so that the test's end puts back what was there before
        monkeypatch.delenv(name)


def test_strip_credentials_moves_them_to_the_environment(no_credentials: None) -> None:
    assert strip_credentials("http://bob:pa%3Ass@host:5000/api") == "http://host:5000/api"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "bob"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "pa:ss"
    assert strip_credentials("https://t0ken@host") == "https://host"
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == "t0ken"


@pytest.mark.parametrize("uri", ["http://host:5000", "sqlite:////tmp/x.db", "", "databricks"])
def test_strip_credentials_keeps_a_uri_without_them(uri: str, no_credentials: None) -> None:
    assert strip_credentials(uri) == uri
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ


def test_auth_failures_are_told_apart_from_an_unreachable_port() -> None:
    assert is_auth_failure("API request to endpoint /api/2.0/x failed with error code 401 != 200")
    assert is_auth_failure("RestException: PERMISSION_DENIED: no access")
    assert not is_auth_failure("ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=40123)")


def test_a_one_line_error_names_no_password() -> None:
    from pipeline.messages import first_line

    error = ConnectionError("HTTPConnectionPool: http://user:s3cret@127.0.0.1:9/api/2.0 failed\nmore")
    assert first_line(error) == "HTTPConnectionPool: http://user:***@127.0.0.1:9/api/2.0 failed"
