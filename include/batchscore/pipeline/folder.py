"""A folder of pipeline files: each validated on its own, and the clashes between them.

A broken file is reported without stopping the others (each becomes its own DAG file's
import error); two pipelines writing one table are named, and ``plan`` refuses the second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from batchscore.pipeline.config import ConfigError, PipelineConfig, load_config


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


def table_clashes(folder: Path, configs: tuple[PipelineConfig, ...] | list[PipelineConfig]) -> list[str]:
    """One message per output table that more than one pipeline writes.

    Reported (by ``batchscore validate`` and the DAG folder's check file), but no DAG is
    stopped for it: a new file must not silence the pipeline that already owns the table.
    At run time, ``plan`` refuses to write a table that another pipeline has published to.
    """
    writers: dict[str, list[str]] = {}
    for config in configs:
        writers.setdefault(config.output.table, []).append(config.name)
    return [
        f"{', '.join(f'{folder / name}.yaml' for name in names)}: output.table: all write {table}; "
        "only the pipeline that published there first may run"
        for table, names in sorted(writers.items())
        if len(names) > 1
    ]


def load_all(folder: Path) -> list[PipelineConfig]:
    """Every pipeline in ``folder``, or a :class:`ConfigError` listing every broken file and clash (the CLI's check)."""
    loaded = load_each(folder)
    problems = [*loaded.errors.values(), *table_clashes(folder, loaded.configs)]
    if problems:
        raise ConfigError("\n".join(problems))
    return list(loaded.configs)
