"""What is taken from MLflow's answers: plain relative model paths, tracking URIs without credentials."""

from __future__ import annotations

from batchscore.models.mlflow_source import ARTIFACT_PATH, redact_uri


def test_only_plain_relative_model_paths_and_no_credentials_in_recorded_uris() -> None:
    assert ARTIFACT_PATH.match("model.skops")
    assert ARTIFACT_PATH.match("data/model.pkl")
    assert not ARTIFACT_PATH.match("/etc/passwd")
    assert not ARTIFACT_PATH.match("a//b")
    assert redact_uri("https://ann:secret@mlflow.example.com:5000/x") == "https://mlflow.example.com:5000/x"
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
