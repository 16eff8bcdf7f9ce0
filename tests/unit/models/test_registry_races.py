"""Writers of one registry at the same moment, and writers that die halfway: real processes, a real folder.

Each racing writer is a process of its own running the real ``batchscore models`` command, all
released by one barrier so that they pick version numbers and write at the same instant
(:mod:`tests.registry_writers`). The crashed writer is a real process killed between its
artifact and its manifest (:mod:`tests.registry_crash`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio

from batchscore.cli.main import main
from batchscore.errors import PermanentError
from batchscore.models import storage
from batchscore.models.alias_log import AliasConflict
from batchscore.models.manifest import FeatureSpec, RegistryError
from batchscore.models.registry import ModelRegistry
from tests.registry_crash import CRASH_EXIT
from tests.registry_writers import classifiers, race

WRITERS = 8
REPO = Path(__file__).resolve().parents[3]
FEATURES = (FeatureSpec("a", "numeric"), FeatureSpec("b", "numeric"))
REGISTERED = re.compile(r"^registered m v(\d+) \(classifier\) sha256 ([0-9a-f]{64})$", re.MULTILINE)


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    monkeypatch.setenv("BATCHSCORE_MODEL_REGISTRY", str(tmp_path / "registry"))
    return ModelRegistry(str(tmp_path / "registry"))


def test_concurrent_registers_get_distinct_versions_and_each_alias_its_own_bytes(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    _x, fitted = classifiers(WRITERS)
    files = []
    for i, model in enumerate(fitted):
        files.append(tmp_path / f"model-{i}.skops")
        sio.dump(model, files[-1])
    commands = [
        ["models", "register", "--name", "m", "--file", str(file), "--alias", f"writer{i}"]
        for i, file in enumerate(files)
    ]
    outputs = race(commands, tmp_path)

    registered = [REGISTERED.search(out) for out in outputs]
    assert all(registered), outputs
    claimed = [(int(m.group(1)), m.group(2)) for m in registered if m]
    assert sorted(v for v, _ in claimed) == list(range(1, WRITERS + 1)), "8 writers, 8 distinct versions"
    assert registry.versions("m") == list(range(1, WRITERS + 1))
    assert len({sha for _, sha in claimed}) == WRITERS
    for i, (version, sha256) in enumerate(claimed):
        manifest = registry.resolve("m", f"writer{i}")
        assert (manifest.version, manifest.sha256) == (version, sha256), f"writer{i}'s alias is on its own version"
        stored = (Path(registry.root) / "m" / manifest.artifact).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == sha256
        loaded = registry.load(manifest)
        np.testing.assert_array_equal(loaded.coef_, fitted[i].coef_)  # the bytes are this writer's model
    assert registry.aliases("m") == {f"writer{i}": v for i, (v, _) in enumerate(claimed)}
    leftovers = [p.name for p in Path(registry.root).rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [], "every writer's temp file is gone"


def test_concurrent_promotes_all_land_in_the_history_and_the_alias_holds_the_last(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    _x, fitted = classifiers(WRITERS)
    for model in fitted:
        registry.register("m", model, FEATURES)
    commands = [["models", "promote", "m", "--alias", "champion", "--version", str(v)] for v in range(1, WRITERS + 1)]
    outputs = race(commands, tmp_path)

    history = [change for change in registry.alias_history("m") if change["alias"] == "champion"]
    assert sorted(change["to"] for change in history) == list(range(1, WRITERS + 1)), "no promotion lost"
    assert [change["from"] for change in history] == [None] + [c["to"] for c in history[:-1]], (
        "each change records the target it replaced: one order, seen alike by every reader"
    )
    assert registry.aliases("m") == {"champion": history[-1]["to"]}
    assert registry.resolve("m", "champion").version == history[-1]["to"]
    for version, out in zip(range(1, WRITERS + 1), outputs, strict=True):
        change = next(c for c in history if c["to"] == version)
        was = f"v{change['from']}" if change["from"] else "unset"
        assert out.strip() == f"m: champion -> v{version} (was {was})"


def test_a_promotion_expecting_another_target_changes_nothing(registry: ModelRegistry) -> None:
    _x, fitted = classifiers(3)
    for model in fitted:
        registry.register("m", model, FEATURES)
    assert registry.promote("m", "champion", 1, expected=None) is None
    assert registry.promote("m", "champion", 2, expected=1) == 1
    with pytest.raises(AliasConflict, match=r"alias 'champion' points at v2, not v1; nothing was changed"):
        registry.promote("m", "champion", 3, expected=1)
    assert registry.aliases("m") == {"champion": 2}
    assert [c["to"] for c in registry.alias_history("m")] == [1, 2]


def crash_while_registering(registry: ModelRegistry, file: Path) -> subprocess.CompletedProcess[str]:
    """``models register`` in a process of its own, killed between the artifact and the manifest."""
    env = {**os.environ, "BATCHSCORE_MODEL_REGISTRY": registry.root}
    argv = [sys.executable, "-m", "tests.registry_crash", "models", "register", "--name", "m", "--file", str(file)]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_a_writer_killed_between_artifact_and_manifest_leaves_no_version(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    _x, (first, second, third) = classifiers(3)
    registry.register("m", first, FEATURES, aliases=("champion",))
    file = tmp_path / "second.skops"
    sio.dump(second, file)

    crashed = crash_while_registering(registry, file)
    assert crashed.returncode == CRASH_EXIT, crashed.stderr
    artifacts = sorted((Path(registry.root) / "m" / "artifacts").iterdir())
    assert len(artifacts) == 2, "the killed writer did write its artifact"
    assert registry.versions("m") == [1], "but no version: it never wrote the manifest"
    assert registry.resolve("m", "latest").version == 1
    assert registry.resolve("m", "champion").version == 1

    assert main(["models", "register", "--name", "m", "--file", str(file)]) == 0  # the same file, again
    again = registry.resolve("m", "latest")
    assert again.version == 2
    np.testing.assert_array_equal(registry.load(again).coef_, second.coef_)
    assert registry.register("m", third, FEATURES).version == 3


def test_an_artifact_is_written_once_and_shared_by_the_versions_of_its_bytes(registry: ModelRegistry) -> None:
    """Registering the same bytes again (an MLflow import given a drift reference) reuses their file."""
    _x, (model,) = classifiers(1)
    data = sio.dumps(model)
    one = registry.register("m", model, FEATURES, artifact=data)
    two = registry.register("m", model, FEATURES, artifact=data)
    assert (one.version, two.version, one.artifact) == (1, 2, two.artifact)
    assert [p.name for p in (Path(registry.root) / "m" / "artifacts").iterdir()] == [f"{one.sha256}.skops"]
    (Path(registry.root) / "m" / one.artifact).write_bytes(data[:-10])
    with pytest.raises(RegistryError, match=r"exists with other bytes than its name says"):
        registry.register("m", model, FEATURES, artifact=data)
    assert registry.versions("m") == [1, 2]


def test_an_older_registrys_half_written_version_is_invisible_and_its_number_not_reused(
    registry: ModelRegistry,
) -> None:
    """Registries written before kept the artifact in the version's folder: a crash left one without manifest."""
    _x, (first, second) = classifiers(2)
    registry.register("m", first, FEATURES)
    orphan = Path(registry.root) / "m" / "versions" / "2"
    orphan.mkdir()
    (orphan / "model.skops").write_bytes(sio.dumps(second))
    assert registry.versions("m") == [1]
    assert registry.resolve("m", "latest").version == 1
    assert listing() == ["m: versions [1]; no aliases"]
    assert registry.register("m", second, FEATURES).version == 3, "v2 stays ambiguous: never reused"
    assert registry.versions("m") == [1, 3]


def listing() -> list[str]:
    """What ``batchscore models list`` prints."""
    with contextlib.redirect_stdout(out := io.StringIO()):
        assert main(["models", "list"]) == 0
    return out.getvalue().splitlines()


def test_an_older_registrys_aliases_and_history_carry_on(registry: ModelRegistry) -> None:
    """aliases.json and alias_history.json of a registry written before are where the change log starts."""
    _x, fitted = classifiers(3)
    for model in fitted:
        registry.register("m", model, FEATURES)
    folder = Path(registry.root) / "m"
    (folder / "aliases.json").write_text(json.dumps({"champion": 1, "challenger": 2}))
    older = [{"alias": "champion", "from": None, "to": 1, "at": "2026-11-01T00:00:00+00:00", "by": "ann"}]
    (folder / "alias_history.json").write_text(json.dumps(older))
    assert registry.aliases("m") == {"champion": 1, "challenger": 2}
    assert registry.promote("m", "champion", 3, by="bob") == 1
    assert registry.aliases("m") == {"champion": 3, "challenger": 2}
    assert [(c["to"], c["by"]) for c in registry.alias_history("m")] == [(1, "ann"), (3, "bob")]


def test_on_an_object_store_an_artifact_without_manifest_is_no_version_either() -> None:
    """fsspec's in-memory store stands for S3/GCS/Azure here: the same conditional put, the same layout."""
    _x, (first, second) = classifiers(2)
    remote = ModelRegistry("memory://batchscore-races/registry")
    remote.register("m", first, FEATURES, aliases=("champion",))
    data = sio.dumps(second)
    storage.create_exclusive(f"{remote.root}/m/artifacts/{hashlib.sha256(data).hexdigest()}.skops", data)
    assert remote.versions("m") == [1]
    assert remote.resolve("m", "latest").version == 1
    with pytest.raises(FileExistsError):
        storage.create_exclusive(f"{remote.root}/m/versions/1/manifest.json", b"{}")
    assert remote.register("m", second, FEATURES).version == 2
    assert remote.resolve("m", "champion").version == 1


def test_an_unreadable_manifest_fails_once_with_a_permanent_error(registry: ModelRegistry) -> None:
    """A manifest changed by hand is a bad input, not a hiccup: no retry of ``plan`` would read it."""
    _x, (model,) = classifiers(1)
    registry.register("m", model, FEATURES)
    (Path(registry.root) / "m" / "versions" / "1" / "manifest.json").write_text("{half")
    with pytest.raises(RegistryError, match=r"model 'm' v1: manifest .*manifest\.json is not readable") as failed:
        registry.resolve("m", "latest")
    assert isinstance(failed.value, PermanentError)
