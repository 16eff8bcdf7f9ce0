"""A registry on a store that cannot create a file only if it is absent: refused alone, safe under the lock.

The store is a folder reached through fsspec's generic create-if-absent, which checks and then
writes (two steps another writer can come between): what FTP, WebDAV or an S3-compatible server
that ignores ``If-None-Match`` give. It is fsspec's own local filesystem under a protocol of its
own (``plainfolder://``), so the registry cannot use hard links on it. The lock is a real
PostgreSQL advisory lock in the embedded server; the writers are real processes running the CLI
at the same instant.
"""

from __future__ import annotations

import re
from pathlib import Path

import fsspec
import numpy as np
import pytest
import skops.io as sio
from fsspec.implementations.local import LocalFileSystem

from batchscore.local.stack import LocalStack
from batchscore.models.manifest import FeatureSpec
from batchscore.models.registry import ModelRegistry
from batchscore.models.storage import StoreError
from tests.registry_writers import classifiers, race

pytestmark = pytest.mark.integration
WRITERS = 8
FEATURES = (FeatureSpec("a", "numeric"), FeatureSpec("b", "numeric"))


class PlainFolder(LocalFileSystem):
    """A folder as a store without conditional put: fsspec's generic ``pipe_file(mode="create")``."""

    protocol = ("plainfolder",)

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return str(super()._strip_protocol(str(path).removeprefix("plainfolder://")))


fsspec.register_implementation("plainfolder", PlainFolder, clobber=True)


def test_without_a_lock_such_a_store_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATCHSCORE_REGISTRY_LOCK_URL", raising=False)
    (tmp_path / "reg").mkdir()
    registry = ModelRegistry(f"plainfolder://{tmp_path}/reg")
    _x, (model,) = classifiers(1)
    with pytest.raises(StoreError) as refused:
        registry.register("m", model, FEATURES)
    assert str(refused.value) == (
        f"model registry at plainfolder://{tmp_path}/reg: this store (PlainFolder) cannot create a file only if it is "
        "absent, so two writers could take one version"
    )
    assert "BATCHSCORE_REGISTRY_LOCK_URL" in refused.value.remedy
    assert list((tmp_path / "reg").rglob("*")) == [], "nothing written"


def test_under_the_lock_concurrent_writers_get_distinct_versions_and_lose_no_promotion(
    database: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "reg").mkdir()
    root = f"plainfolder://{tmp_path}/reg"
    monkeypatch.setenv("BATCHSCORE_MODEL_REGISTRY", root)
    monkeypatch.setenv("BATCHSCORE_REGISTRY_LOCK_URL", database.database_url("scores"))
    _x, fitted = classifiers(WRITERS)
    files = []
    for i, model in enumerate(fitted):
        files.append(tmp_path / f"model-{i}.skops")
        sio.dump(model, files[-1])
    outputs = race(
        [["models", "register", "--name", "m", "--file", str(f), "--alias", f"writer{i}"] for i, f in enumerate(files)],
        tmp_path,
    )
    claimed = [int(m.group(1)) for out in outputs if (m := re.search(r"registered m v(\d+) ", out))]
    assert sorted(claimed) == list(range(1, WRITERS + 1))
    registry = ModelRegistry(root)
    assert registry.versions("m") == list(range(1, WRITERS + 1))
    for i, version in enumerate(claimed):
        manifest = registry.resolve("m", f"writer{i}")
        assert manifest.version == version
        np.testing.assert_array_equal(registry.load(manifest).coef_, fitted[i].coef_)

    race([["models", "promote", "m", "--alias", "champion", "--version", str(v)] for v in claimed], tmp_path)
    history = [c for c in registry.alias_history("m") if c["alias"] == "champion"]
    assert sorted(c["to"] for c in history) == list(range(1, WRITERS + 1))
    assert [c["from"] for c in history] == [None] + [c["to"] for c in history[:-1]]
    assert registry.aliases("m")["champion"] == history[-1]["to"]
