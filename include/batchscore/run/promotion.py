"""Promotion with evidence: what a person sees before moving the champion alias, and what is kept after.

The evidence covers the challenger's last N evaluated windows: realised metrics of champion
and challenger on the same window (the challenger scores the champion's rows in the same run),
label agreement and score PSI between the two, and the run's drift. ``promotion.requires``
is checked and stated; it never decides. The decision (approved, rejected, expired) is
recorded in ``scoring.promotion_decisions``; an approval moves the alias, with the approver
and the evidence in the registry's alias history, and only if the champion is still the
version the evidence was gathered against.
"""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

from batchscore.errors import PermanentError
from batchscore.models.alias_log import AliasConflict
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.config import PipelineConfig
from batchscore.run.planning import Endpoints
from batchscore.scoring.metrics import HIGHER_IS_BETTER
from batchscore.sink.performance import performance_rows, published_runs, record_decision

CLASSIFIER_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "positive_rate")
REGRESSOR_METRICS = ("rmse", "mae", "r2", "bias")


class PromotionError(PermanentError, RuntimeError):
    """There is nothing to decide on, or the registry moved since the evidence was gathered."""

    remedy = "evaluate the challenger's windows first (evaluate_<name>), or ask again for a fresh request"


def _iso(value: datetime) -> str:
    return value.isoformat()


def gather_evidence(config: PipelineConfig, endpoints: Endpoints) -> dict[str, Any]:
    """The evidence for promoting the pipeline's challenger, from its last ``promotion.windows`` evaluated windows."""
    if config.promotion is None or config.shadow is None:
        raise PromotionError(f"{config.name}: has no promotion (and shadow) in its pipeline file")
    rows = performance_rows(endpoints.scores_url, config.name)
    by_window: dict[tuple[datetime, datetime], dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_window.setdefault((row["window_start"], row["window_end"]), {})[row["role"]] = row
    paired = [(w, roles) for w, roles in sorted(by_window.items()) if {"champion", "challenger"} <= set(roles)]
    if not paired:
        raise PromotionError(
            f"{config.name}: no evaluated window has both champion and challenger: run evaluate_{config.name} first"
        )
    challenger = paired[-1][1]["challenger"]["model_version"]  # the version in shadow most recently
    champion = paired[-1][1]["champion"]["model_version"]
    same = [(w, r) for w, r in paired if r["challenger"]["model_version"] == challenger]
    same = same[-config.promotion.windows :]
    runs = published_runs(endpoints.scores_url, config.name, [w for w, _ in same])
    names = CLASSIFIER_METRICS if same[-1][1]["champion"]["task"] == "classifier" else REGRESSOR_METRICS
    windows = []
    for (start, end), roles in same:
        run = runs.get((start, end), {})
        shadow = run.get("shadow") or {}
        windows.append(
            {
                "window_start": _iso(start),
                "window_end": _iso(end),
                "champion_version": roles["champion"]["model_version"],
                "rows_matched": {role: roles[role]["rows_matched"] for role in ("champion", "challenger")},
                "champion": {m: roles["champion"]["metrics"].get(m) for m in names},
                "challenger": {m: roles["challenger"]["metrics"].get(m) for m in names},
                "label_agreement": shadow.get("label_agreement"),
                "score_psi": shadow.get("psi"),
                "drift_status": run.get("drift_status"),
                "drift_max_psi": run.get("drift_max_psi"),
            }
        )
    aliases = ModelRegistry(endpoints.registry).aliases(config.model.name)
    evidence: dict[str, Any] = {
        "pipeline": config.name,
        "model": config.model.name,
        "alias": config.model.version,
        "champion_version": aliases.get(config.model.version, champion),
        "challenger_version": challenger,
        "windows": windows,
        "mean": {role: _means(windows, role, names) for role in ("champion", "challenger")},
    }
    evidence["requirement"] = _requirement(config, windows)
    return evidence


def _means(windows: list[dict[str, Any]], role: str, names: tuple[str, ...]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in names:
        values = [w[role][name] for w in windows if w[role].get(name) is not None]
        out[name] = statistics.fmean(values) if values else None
    return out


def _requirement(config: PipelineConfig, windows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``promotion.requires`` checked: the challenger's mean gain on the metric over the last N windows."""
    assert config.promotion is not None
    requires = config.promotion.requires
    if requires is None:
        return None
    recent = [
        w
        for w in windows[-requires.windows :]
        if None not in (w["champion"].get(requires.metric), w["challenger"].get(requires.metric))
    ]
    sign = 1.0 if HIGHER_IS_BETTER[requires.metric] else -1.0
    gains = [sign * (w["challenger"][requires.metric] - w["champion"][requires.metric]) for w in recent]
    gain = statistics.fmean(gains) if gains else None
    enough = len(recent) >= requires.windows
    met = bool(enough and gain is not None and gain >= requires.min_gain)
    why = (
        f"only {len(recent)} of the {requires.windows} windows required are evaluated"
        if not enough
        else f"mean gain in {requires.metric} {gain:+.4f} {'>=' if met else '<'} {requires.min_gain}"
    )
    return {
        "metric": requires.metric,
        "min_gain": requires.min_gain,
        "windows": requires.windows,
        "gain": gain,
        "met": met,
        "why": why,
    }


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def request_body(evidence: dict[str, Any]) -> str:
    """The approval request's Markdown: the requirement, then one line per window, champion beside challenger."""
    names = list(evidence["mean"]["champion"])
    lines = [
        f"Move **{evidence['model']}:{evidence['alias']}** from v{evidence['champion_version']} "
        f"to the challenger **v{evidence['challenger_version']}** (pipeline `{evidence['pipeline']}`), "
        f"on {len(evidence['windows'])} evaluated windows.",
        "",
    ]
    requirement = evidence.get("requirement")
    if requirement is not None:
        verdict = "**meets**" if requirement["met"] else "**does not meet**"
        lines += [f"Requirement: the challenger {verdict} it ({requirement['why']}).", ""]
    lines += [
        "| window | rows (champion / challenger) | "
        + " | ".join(f"{n} champion / challenger" for n in names)
        + " | label agreement | score PSI | drift |",
        "|---" * (len(names) + 5) + "|",
    ]
    for w in evidence["windows"]:
        metrics = " | ".join(f"{_fmt(w['champion'][n])} / {_fmt(w['challenger'][n])}" for n in names)
        lines.append(
            f"| {w['window_start'][:16]} | {w['rows_matched']['champion']} / {w['rows_matched']['challenger']} | "
            f"{metrics} | {_fmt(w['label_agreement'])} | {_fmt(w['score_psi'])} | "
            f"{w['drift_status'] or 'n/a'} ({_fmt(w['drift_max_psi'])}) |"
        )
    means = " | ".join(
        f"{_fmt(evidence['mean']['champion'][n])} / {_fmt(evidence['mean']['challenger'][n])}" for n in names
    )
    lines.append(f"| **mean** | | {means} | | | |")
    return "\n".join(lines)


def summary(evidence: dict[str, Any]) -> dict[str, Any]:
    """The evidence in short, for the alias history: versions, windows covered, means and the requirement."""
    return {
        "pipeline": evidence["pipeline"],
        "windows": [evidence["windows"][0]["window_start"], evidence["windows"][-1]["window_end"]],
        "window_count": len(evidence["windows"]),
        "mean": evidence["mean"],
        "requirement": evidence.get("requirement"),
    }


def apply_decision(
    config: PipelineConfig,
    endpoints: Endpoints,
    evidence: dict[str, Any],
    *,
    decision: str,
    by: str | None,
    run_id: str,
) -> int | None:
    """Record the decision; on ``approved``, move the alias first (the version it pointed at is returned).

    Refused (nothing moved, nothing recorded as approved) when the alias no longer points at the
    champion the evidence compared against: someone promoted in between.
    """
    registry = ModelRegistry(endpoints.registry)
    name, alias = evidence["model"], evidence["alias"]
    champion, challenger = evidence["champion_version"], evidence["challenger_version"]
    previous = champion
    if decision == "approved":
        try:  # compare-and-swap: only if the alias still points at the champion the evidence compared
            previous = registry.promote(
                name,
                alias,
                challenger,
                by=f"{by} (approved in {config.name} promotion run {run_id})",
                expected=champion,
                evidence=summary(evidence),
            )
        except AliasConflict as exc:
            raise PromotionError(
                f"{name}:{alias} moved since the evidence was gathered against v{champion}: {exc}"
            ) from exc
    record_decision(
        endpoints.scores_url,
        pipeline=config.name,
        run_id=run_id,
        model_name=name,
        alias=alias,
        from_version=previous,
        to_version=challenger,
        decision=decision,
        decided_by=by,
        evidence=evidence,
    )
    return previous
