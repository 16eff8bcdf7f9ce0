"""The demo's three models, one of each kind, and how each is trained when the registry lacks it.

``make demo`` and the compose init (``batchscore demo-data``) both call :func:`register_missing`,
so a fresh registry gets all three and a second call trains nothing. Training windows count
from the warehouse's first day, so they are the oldest data and never the windows the demo scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from batchscore.local.demo import model, segments, spend
from batchscore.models.manifest import ModelManifest, RegistryError
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.windows import Window

ALIAS = "champion"


@dataclass(frozen=True)
class DemoModel:
    """One demo model: its registry name, the pipeline that scores with it and what that writes per row,
    how to train it, how to describe a trained version."""

    name: str
    pipeline: str
    writes: str
    train: Callable[[str, str, datetime], ModelManifest]  # (warehouse URL, registry root, first day) -> manifest
    describe: Callable[[ModelManifest], str]


def _days(first: datetime, n: int) -> Window:
    return Window(first, first + timedelta(days=n))


DEMO_MODELS = (
    DemoModel(
        "churn",
        "churn",
        "P(churn) as the score and the predicted class (0/1) as the label",
        lambda url, root, first: model.train_and_register(url, root, train=_days(first, 2)),
        lambda m: (
            f"holdout ROC AUC {m.metrics['holdout_roc_auc']:.3f} "
            f"(the ground-truth rule scores {m.metrics['ground_truth_rule_roc_auc']:.3f})"
        ),
    ),
    DemoModel(
        "spend",
        "spend",
        "the expected spend over the next 30 days as the score (no label)",
        lambda url, root, first: spend.train_and_register(url, root, train=_days(first, 1)),
        lambda m: (
            f"holdout R² {m.metrics['holdout_r2']:.3f}, MAE {m.metrics['holdout_mae']:.1f} "
            f"(the ground-truth rule: R² {m.metrics['ground_truth_rule_r2']:.3f}, "
            f"MAE {m.metrics['ground_truth_rule_mae']:.1f})"
        ),
    ),
    DemoModel(
        "segments",
        "segments",
        "the customer's segment id as the label (no score)",
        lambda url, root, first: segments.train_and_register(url, root, train=_days(first, 1)),
        lambda m: (
            f"{m.metrics['n_clusters']:.0f} segments, inertia {m.metrics['inertia_per_row']:.2f} a row, "
            f"silhouette {m.metrics['silhouette']:.3f} on {m.metrics['silhouette_rows']:,.0f} rows"
        ),
    ),
)


def register_missing(
    warehouse: str, registry_root: str, first_day: datetime, *, say: Callable[[str], None] = print
) -> dict[str, ModelManifest]:
    """Each demo model's champion, training and registering the ones the registry lacks (idempotent).

    ``first_day`` is the warehouse's first day (midnight UTC); returns the champions by model name.
    Training runs on one OpenMP thread: on these few hundred thousand rows, boosting's threads
    spend their time waiting for each other as soon as the cores are busy with anything else
    (churn on a shared 2-core machine: 2.6-4.4 s on one thread, 9.5-10.5 s on two).
    """
    from threadpoolctl import threadpool_limits

    registry = ModelRegistry(registry_root)
    champions: dict[str, ModelManifest] = {}
    for demo in DEMO_MODELS:
        try:
            manifest = registry.resolve(demo.name, ALIAS)
        except RegistryError:
            say(f"training the {demo.name} model and registering it as '{ALIAS}'")
            with threadpool_limits(limits=1):
                manifest = demo.train(warehouse, registry.root, first_day)
        say(f"model {demo.name} v{manifest.version}: {demo.describe(manifest)}")
        champions[demo.name] = manifest
    return champions
