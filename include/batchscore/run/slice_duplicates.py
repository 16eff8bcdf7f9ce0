"""What a slice's duplicated keys change once it is loaded: its table, the challenger's, and their counts.

Whether a key occurs twice is known only when every key of the slice has been seen, so the
copies are taken out after the load (:func:`batchscore.sink.load.remove_duplicate_keys`, by the
pipeline's ``duplicate_keys`` policy). Everything counted while the batches went by must then
forget them too: the challenger's table loses the same copies (both tables were loaded in the
source's order, so ``keep_first`` keeps the same row in each), its counts and its agreement
with the champion are taken again from the two tables, and the drift counts lose the copies'
features (the slice is read from the source again for that: this path runs only when the
source repeated a key, a fault of the upstream) and count the scores again from the table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from batchscore import db
from batchscore.models.manifest import ModelManifest
from batchscore.pipeline.config import PipelineConfig
from batchscore.scoring.drift import DriftCounter
from batchscore.scoring.features import conform
from batchscore.scoring.shadow import Agreement, ShadowSlice
from batchscore.scoring.validation import validate
from batchscore.sink.load import SliceTarget, read_scores, remove_duplicate_keys
from batchscore.sink.shadow_table import Challenger

log = logging.getLogger(__name__)


def agreement_of(url: str, champion: SliceTarget, challenger: SliceTarget, key: str, agreement: Agreement) -> None:
    """Count into ``agreement`` how far the two slice tables agree, key by key (streamed, joined in the database)."""
    query = sql.SQL("SELECT c.{k}, c.score, c.label, s.score, s.label FROM {c} AS c JOIN {s} AS s USING ({k})").format(
        k=sql.Identifier(key), c=champion.scores_ident, s=challenger.scores_ident
    )
    with db.adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute(db.render(query))
        for batch in cur.fetch_record_batch():
            keys = batch.column(0)
            ours = pa.table({key: keys, "score": batch.column(1), "label": batch.column(2)})
            theirs = pa.table({key: keys, "score": batch.column(3), "label": batch.column(4)})
            agreement.add(ours, theirs)


def forget_in_drift(  # noqa: PLR0917 (one caller, settle_duplicates)
    counter: DriftCounter,
    source: Iterator[pa.RecordBatch],
    config: PipelineConfig,
    manifest: ModelManifest,
    schema: pa.Schema,
    duplicated: pa.Array,
) -> None:
    """Take the removed copies out of the drift's feature counts: ``source`` is the slice read again.

    Only rows that passed validation were counted, so each batch is validated again (not
    scored). ``reject`` removed every copy; ``keep_first`` every copy after the first, in the
    source's order (the order the load kept).
    """
    key, first_kept = config.entity_key, config.validation.duplicate_keys == "keep_first"
    seen: set[object] = set()
    for batch in source:
        clean = validate(conform(batch, schema), key, manifest.features, config.validation.unseen_categories).clean
        copies = clean.filter(pc.is_in(clean.column(key), value_set=duplicated))
        if first_kept and copies.num_rows:
            later = []
            for value in copies.column(key).to_pylist():
                later.append(value in seen)
                seen.add(value)
            copies = copies.filter(pa.array(later, pa.bool_()))
        counter.subtract(copies)


def settle_duplicates(  # noqa: PLR0917 (one caller, job.score_slice)
    url: str,
    config: PipelineConfig,
    manifest: ModelManifest,
    target: SliceTarget,
    duplicated: pa.Array,
    schema: pa.Schema,
    drift: DriftCounter | None,
    challenger: Challenger | None,
    shadow: ShadowSlice | None,
    read_again: Callable[[int], tuple[pa.Schema, Iterator[pa.RecordBatch]]],
) -> tuple[int, ShadowSlice | None]:
    """Apply the duplicate policy to the slice (and the challenger's); the rows moved to the rejects, the shadow.

    ``read_again(batch_rows)`` reads the slice from the source again (for the drift counts).

    Raises :class:`~batchscore.sink.load.DuplicateKeys` under ``duplicate_keys: fail``.
    """
    key, policy = config.entity_key, config.validation.duplicate_keys
    moved = remove_duplicate_keys(url, target, key, policy)
    if challenger is not None and shadow is not None:
        theirs = remove_duplicate_keys(url, challenger.loader.target, key, policy)
        agreement = Agreement(challenger.agreement.bins)
        agreement_of(url, target, challenger.loader.target, key, agreement)
        shadow = replace(
            shadow,
            rows_scored=shadow.rows_scored - theirs,
            rows_rejected=shadow.rows_rejected + theirs,
            agreement=agreement.partial(),
        )
    if drift is not None:
        forget_in_drift(drift, read_again(config.execution.batch_rows)[1], config, manifest, schema, duplicated)
        drift.recount_scores(read_scores(url, target))
        log.info("drift: %d duplicated key(s) taken out of the counts", len(duplicated))
    return moved, shadow
