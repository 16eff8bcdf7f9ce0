import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from batchscore.models.manifest import FeatureSpec, RegistryError
from batchscore.models.registry import ModelRegistry
from tests.hostile_models import hostile_files

FEATURES = (FeatureSpec("a", "numeric"), FeatureSpec("b", "numeric"))


@pytest.fixture
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    return x, (x["a"] + x["b"] > 0).astype(int).to_numpy()


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(str(tmp_path / "registry"))


def artifact(registry: ModelRegistry, name: str, version: int) -> Path:
    """The artifact file a version's manifest names (content-addressed under the model's folder)."""
    return Path(registry.root) / name / registry.resolve(name, str(version)).artifact


def test_register_resolve_and_load_round_trip(registry: ModelRegistry, data: tuple) -> None:
    x, y = data
    model = LogisticRegression().fit(x, y)
    manifest = registry.register("m", model, FEATURES, metrics={"auc": 0.9}, aliases=("champion",))
    assert (manifest.version, manifest.task, manifest.classes, manifest.positive_class) == (
        1,
        "classifier",
        ("0", "1"),
        "1",
    )
    second = registry.register("m", LogisticRegression(C=0.1).fit(x, y), FEATURES, aliases=("challenger",))
    assert registry.versions("m") == [1, 2]
    assert registry.resolve("m", "champion").version == 1
    assert registry.resolve("m", "challenger").sha256 == second.sha256
    assert registry.resolve("m", "latest").version == 2
    assert registry.resolve("m", "1").metrics == {"auc": 0.9}
    loaded = registry.load(registry.resolve("m", "champion"))
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_manifest_records_checksum_and_schema(registry: ModelRegistry, data: tuple) -> None:
    x, _y = data
    manifest = registry.register("m", LinearRegression().fit(x, x["a"]), FEATURES, training={"rows": 200})
    on_disk = json.loads((Path(registry.root) / "m" / "versions" / "1" / "manifest.json").read_text())
    assert on_disk["sha256"] == manifest.sha256
    assert len(manifest.sha256) == 64
    assert on_disk["task"] == "regressor"
    assert [f["name"] for f in on_disk["features"]] == ["a", "b"]
    assert on_disk["training"] == {"rows": 200}


def test_clusterer_is_recognised(registry: ModelRegistry, data: tuple) -> None:
    x, _ = data
    assert registry.register("seg", KMeans(3, n_init=1, random_state=0).fit(x), FEATURES).task == "clusterer"


def test_unknown_model_version_and_alias_say_what_exists(registry: ModelRegistry, data: tuple) -> None:
    x, y = data
    registry.register("m", LogisticRegression().fit(x, y), FEATURES, aliases=("champion",))
    with pytest.raises(RegistryError, match="no model named 'nope'"):
        registry.resolve("nope", "champion")
    with pytest.raises(RegistryError, match=r"no version 7; known versions: \[1\]"):
        registry.resolve("m", "7")
    with pytest.raises(RegistryError, match="no alias 'prod'; known aliases: champion"):
        registry.resolve("m", "prod")
    with pytest.raises(RegistryError, match="reserved"):
        registry.set_alias("m", "2", 1)


def test_tampered_artifact_fails_its_checksum(registry: ModelRegistry, data: tuple) -> None:
    x, y = data
    manifest = registry.register("m", LogisticRegression().fit(x, y), FEATURES)
    path = artifact(registry, "m", 1)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(RegistryError, match="does not match its manifest"):
        registry.load(manifest)


def test_truncated_artifact_with_matching_manifest_is_not_loadable(registry: ModelRegistry, data: tuple) -> None:
    x, y = data
    manifest = registry.register("m", LogisticRegression().fit(x, y), FEATURES)
    artifact(registry, "m", 1).write_bytes(b"not a zip file at all")
    forged = manifest.__class__(
        **{**manifest.__dict__, "sha256": __import__("hashlib").sha256(b"not a zip file at all").hexdigest()}
    )
    with pytest.raises(RegistryError, match="not a readable skops file"):
        registry.load(forged)


def test_pinned_checksum_must_match(registry: ModelRegistry, data: tuple) -> None:
    x, y = data
    manifest = registry.register("m", LogisticRegression().fit(x, y), FEATURES)
    with pytest.raises(RegistryError, match="not the one pinned"):
        registry.load(manifest, pinned_sha256="0" * 64)
    assert registry.load(manifest, pinned_sha256=manifest.sha256) is not None


def _hostile(data: tuple) -> object:
    x, y = data
    hostile = make_pipeline(FunctionTransformer(os.getcwd), LogisticRegression())
    hostile.steps[0] = ("f", FunctionTransformer(func=os.system))
    hostile.steps[1] = ("m", LogisticRegression().fit(x, y))
    return hostile


def test_model_holding_arbitrary_callables_is_refused_at_registration(registry: ModelRegistry, data: tuple) -> None:
    with pytest.raises(RegistryError, match=r"outside the allowlist: .*system"):
        registry.register("evil", _hostile(data), FEATURES)
    assert registry.versions("evil") == [], "a refused model leaves nothing in the registry"


def test_hostile_artifact_placed_in_the_registry_is_refused_at_load(registry: ModelRegistry, data: tuple) -> None:
    """Someone with write access swaps the bytes and the manifest's sha256: loading still runs no code."""
    import skops.io as sio

    x, y = data
    manifest = registry.register("evil", LogisticRegression().fit(x, y), FEATURES)
    hostile = sio.dumps(_hostile(data))
    artifact(registry, "evil", 1).write_bytes(hostile)
    manifest_path = Path(registry.root) / "evil" / "versions" / "1" / "manifest.json"
    doc = json.loads(manifest_path.read_text())
    doc["sha256"] = hashlib.sha256(hostile).hexdigest()
    manifest_path.write_text(json.dumps(doc))
    swapped = registry.resolve("evil", "1")
    assert swapped.sha256 != manifest.sha256
    registry.verify(swapped)  # the bytes match the (rewritten) manifest ...
    with pytest.raises(RegistryError, match=r"outside the allowlist: .*system"):
        registry.load(swapped)  # ... but deserialising refuses the callable


@pytest.mark.parametrize("way", sorted(hostile_files(Path("/nonexistent/marker"))))
def test_a_hand_made_hostile_file_swapped_into_the_registry_runs_nothing_at_slice_load(
    registry: ModelRegistry, data: tuple, tmp_path: Path, way: str
) -> None:
    """What every slice task calls: the bytes match the rewritten manifest, and still nothing runs."""
    x, y = data
    registry.register("evil", LogisticRegression().fit(x, y), FEATURES)
    payload = tmp_path / "payload"
    payload.mkdir()
    hostile = hostile_files(payload / "code-ran")[way]
    artifact(registry, "evil", 1).write_bytes(hostile)
    manifest_path = Path(registry.root) / "evil" / "versions" / "1" / "manifest.json"
    doc = json.loads(manifest_path.read_text())
    doc["sha256"] = hashlib.sha256(hostile).hexdigest()
    manifest_path.write_text(json.dumps(doc))
    with pytest.raises(RegistryError, match="outside the allowlist"):
        registry.load(registry.resolve("evil", "1"))
    assert not list(payload.iterdir())


def test_loaded_models_are_bounded_and_memory_stays_flat(
    registry: ModelRegistry, data: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long-lived worker meeting 5 model versions 50 times keeps at most N of them (an LRU by sha256)."""
    import gc

    import psutil
    from sklearn.ensemble import HistGradientBoostingClassifier

    from batchscore.models import registry as module

    x, y = data
    manifests = [
        registry.register("lru", HistGradientBoostingClassifier(max_iter=60, random_state=seed).fit(x, y), FEATURES)
        for seed in range(5)
    ]
    monkeypatch.setattr(module, "LOADED_MODELS_KEPT", 2)
    module._LOADED.clear()
    process = psutil.Process()
    rss = []
    for i in range(50):
        manifest = manifests[i % 5]
        model = registry.load(manifest)
        assert model.predict_proba(x.head(3)).shape == (3, 2)
        assert len(module._LOADED) <= 2
        assert next(reversed(module._LOADED)) == manifest.sha256  # the one just used is the newest
        del model
        gc.collect()
        rss.append(process.memory_info().rss)
    growth = (rss[-1] - rss[9]) / 2**20
    assert growth < 20, f"memory grew {growth:.1f} MB from the 10th to the 50th load"
    assert registry.load(manifests[4]) is registry.load(manifests[4]), "a hit returns the kept model"


def test_the_registry_works_from_an_object_store_url(data: tuple) -> None:
    """Workers on other hosts read the registry from a URL (fsspec): here fsspec's in-memory store."""
    x, y = data
    remote = ModelRegistry("memory://batchscore-test/registry")
    manifest = remote.register("m", LogisticRegression().fit(x, y), FEATURES, aliases=("champion",))
    again = ModelRegistry("memory://batchscore-test/registry")  # another process would see the same objects
    assert again.resolve("m", "champion") == manifest
    again.verify(manifest, pinned_sha256=manifest.sha256)
    assert again.load(manifest).predict_proba(x.head(2)).shape == (2, 2)


def test_a_file_changed_after_its_model_was_loaded_still_fails(registry: ModelRegistry, data: tuple) -> None:
    """The cache holds deserialised models, never a pass: every load checks the bytes again."""
    x, y = data
    manifest = registry.register("m", LogisticRegression().fit(x, y), FEATURES)
    registry.load(manifest)
    path = artifact(registry, "m", 1)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(RegistryError, match="does not match its manifest"):
        registry.load(manifest)
    path.unlink()
    with pytest.raises(RegistryError, match="is missing"):
        registry.load(manifest)
