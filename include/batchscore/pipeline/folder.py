"""A folder of pipeline files: each validated on its own, and the clashes between them.

A broken file is reported without stopping the others (each becomes its own DAG file's
import error); two pipelines writing one table are named, and ``plan`` refuses the second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from batchscore.pipeline.config import ConfigError, PipelineConfig, load_config
from batchscore.pipeline.table_names import Written, written_tables


@dataclass(frozen=True)
class LoadedPipelines:
    """The pipeline files of a folder: the valid configs, and one error per broken file (by pipeline name)."""

    configs: tuple[PipelineConfig, ...]
    errors: dict[str, str]


def load_each(folder: Path) -> LoadedPipelines:
    """Every ``*.yaml`` pipeline in ``folder``, each validated on its own: a broken file stops only itself."""
    configs: dict[str, PipelineConfig] = {}
    errors: dict[str, str] = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            configs[path.stem] = load_config(path)
        except ConfigError as exc:
            errors[path.stem] = str(exc)
    return LoadedPipelines(tuple(configs[name] for name in sorted(configs)), errors)


ROLE_FIELDS = {"scores": "output.table", "shadow": "shadow (output.table + _shadow)", "lineage view": "lineage view"}


def table_clashes(folder: Path, configs: tuple[PipelineConfig, ...] | list[PipelineConfig]) -> list[str]:
    """One message per table or view that more than one pipeline writes.

    Every table a pipeline writes counts (its scores table, its ``<table>_shadow``, their
    lineage views), so a pipeline whose ``output.table`` is another's shadow is named too.
    Reported (by ``batchscore validate`` and the DAG folder's check file), but no DAG is
    stopped for it: a new file must not silence the pipeline that already owns the table.
    At run time, ``plan`` claims its tables atomically (:mod:`batchscore.sink.ownership`) and
    refuses a table another pipeline owns.
    """
    writers: dict[str, dict[str, Written]] = {}
    for config in configs:
        for written in written_tables(config):
            writers.setdefault(written.table, {}).setdefault(config.name, written)
    messages = []
    for table, names in sorted(writers.items()):
        one_tables_view = all(w.role == "lineage view" for w in names.values()) and (
            len({w.scores_table for w in names.values()}) == 1
        )
        if len(names) < 2 or one_tables_view:
            continue  # one writer, or the view of one shared table: reported with the table
        fields = {ROLE_FIELDS[w.role] for w in names.values()}
        files = ", ".join(
            f"{folder / name}.yaml" + ("" if len(fields) == 1 else f" ({ROLE_FIELDS[w.role]})")
            for name, w in names.items()
        )
        what = f"{fields.pop()}: " if len(fields) == 1 else ""
        messages.append(f"{files}: {what}all write {table}; only the pipeline that claimed it first may run")
    return messages


def load_all(folder: Path) -> list[PipelineConfig]:
    """Every pipeline in ``folder``, or a :class:`ConfigError` listing every broken file and clash (the CLI's check)."""
    loaded = load_each(folder)
    problems = [*loaded.errors.values(), *table_clashes(folder, loaded.configs)]
    if problems:
        raise ConfigError("\n".join(problems))
    return list(loaded.configs)
