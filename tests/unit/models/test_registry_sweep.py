"""``models gc``: the files writers that died left behind are found, kept while young, and removed when old.

The orphan is made the real way: a ``models register`` process killed between its artifact and
its manifest (:mod:`tests.registry_crash`). Ages are set with ``os.utime``, as a day passing would.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio

from batchscore.cli.main import main
from batchscore.models.manifest import FeatureSpec
from batchscore.models.registry import ModelRegistry
from batchscore.models.registry_sweep import find_orphans, remove_orphans
from tests.registry_crash import CRASH_EXIT
from tests.registry_writers import classifiers
from tests.unit.models.test_registry_races import crash_while_registering

FEATURES = (FeatureSpec("a", "numeric"), FeatureSpec("b", "numeric"))
DAY = 24 * 3600


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    monkeypatch.setenv("BATCHSCORE_MODEL_REGISTRY", str(tmp_path / "registry"))
    return ModelRegistry(str(tmp_path / "registry"))


def _age(path: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def _crashed_orphan(registry: ModelRegistry, tmp_path: Path, model: object) -> Path:
    """The artifact a writer killed before its manifest left: the one file no manifest names."""
    file = tmp_path / "orphan.skops"
    sio.dump(model, file)
    assert crash_while_registering(registry, file).returncode == CRASH_EXIT
    folder = Path(registry.root) / "m" / "artifacts"
    used = {registry.resolve("m", str(v)).artifact.rsplit("/", 1)[-1] for v in registry.versions("m")}
    (orphan,) = [p for p in folder.iterdir() if p.name not in used]
    return orphan


def test_a_dead_writers_files_are_kept_while_young_and_removed_when_old(
    registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _x, (first, second, _third) = classifiers(3)
    kept = registry.register("m", first, FEATURES, aliases=("champion",))
    orphan = _crashed_orphan(registry, tmp_path, second)
    temp = Path(registry.root) / "m" / "versions" / "1" / f".manifest.json.{'ab' * 16}.tmp"
    temp.write_bytes(b"{")

    assert find_orphans(registry, "m") == []  # young: a writer may still be at work on them
    for path in (orphan, temp, Path(registry.root) / "m" / kept.artifact):
        _age(path, 2 * DAY)
    found = find_orphans(registry, "m")
    assert [(Path(o.url).name, o.reason.split(" ")[1]) for o in found] == [
        (orphan.name, "artifact"),
        (temp.name, "writer's"),
    ]
    assert found[0].size == orphan.stat().st_size

    assert main(["models", "gc"]) == 0  # lists only
    out = capsys.readouterr().out
    assert f"unused: {orphan}" in out
    assert f"{found[0].size + 1:,} bytes can be removed with --delete" in out
    assert orphan.exists()
    assert temp.exists()

    assert main(["models", "gc", "--delete"]) == 0
    assert f"removed: {orphan}" in capsys.readouterr().out
    assert not orphan.exists()
    assert not temp.exists()
    assert (Path(registry.root) / "m" / kept.artifact).exists(), "an old artifact a version names stays"
    assert registry.versions("m") == [1]
    np.testing.assert_array_equal(registry.load(registry.resolve("m", "champion")).coef_, first.coef_)
    assert find_orphans(registry, "m", grace=timedelta(0)) == []


def test_an_old_orphan_registered_again_is_refreshed_and_never_swept(registry: ModelRegistry, tmp_path: Path) -> None:
    """The crashed writer's model registered again re-uses its artifact: the sweep must not take it."""
    _x, (first, second) = classifiers(2)
    registry.register("m", first, FEATURES)
    orphan = _crashed_orphan(registry, tmp_path, second)
    _age(orphan, 2 * DAY)

    again = registry.register("m", second, FEATURES, artifact=orphan.read_bytes())
    assert again.artifact.endswith(orphan.name)
    assert time.time() - orphan.stat().st_mtime < 3600, "re-using the file marks it written now"
    assert remove_orphans(registry, "m", grace=timedelta(0)) == []
    np.testing.assert_array_equal(registry.load(again).coef_, second.coef_)


@pytest.mark.parametrize(
    ("args", "message"),
    [(("--older-than-hours", "-1"), "must be between 0 and 8784"), (("--name", "nope"), "0 bytes can be removed")],
)
def test_gc_bad_or_empty_input(
    registry: ModelRegistry, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    code = main(["models", "gc", *args])
    captured = capsys.readouterr()
    assert message in captured.err + captured.out
    assert code == (1 if "-1" in args else 0)
