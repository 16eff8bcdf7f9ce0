"""Who may read what in the Scoring view: the configured auth manager's answer, per pipeline.

A pipeline's runs are the runs of its DAG (``score_<pipeline>``), so the view asks Airflow's
auth manager what Airflow's own UI would ask about that DAG, whichever manager is configured
(SimpleAuthManager's roles, FAB's per-DAG permissions, or any other):

- a run record, its charts, drift, challenger, and its rejects counted by reason: read access
  to the DAG's runs (``DagAccessEntity.RUN``, GET);
- the rejected rows' values, as they arrived from the source (they can hold personal data):
  also read access to the DAG's task logs (``DagAccessEntity.TASK_LOGS``), which already show
  what a run read;
- lists: the DAGs the manager lists for the user (``get_authorized_dag_ids``), each kept only
  with read access to its runs.

A pipeline the user may not read is absent: lists leave it out, and a request that names it
gets the same answer as a pipeline that does not exist (404), so the answer never confirms
that it exists. A pipeline whose DAG is gone from Airflow's metadata is listed for nobody.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends

from scoring_ui.links import dag_id_of

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser


def team_of(dag_id: str) -> str | None:
    """The DAG's team in a multi-team deployment (auth managers decide per team), else None without a query."""
    from airflow.configuration import conf

    if not conf.getboolean("core", "multi_team", fallback=False):
        return None
    from airflow.models.dag import DagModel

    return DagModel.get_team_name(dag_id)


@dataclass
class Reader:
    """One request's user and what the auth manager lets them read; each answer asked once per request.

    ``listed``: the DAG ids the manager lists for the user; None asks it on first use (it reads
    Airflow's metadata database).
    """

    user: BaseUser
    manager: BaseAuthManager[Any]
    listed: frozenset[str] | None = None
    _answers: dict[tuple[str, DagAccessEntity], bool] = field(default_factory=dict, repr=False)

    def _may(self, pipeline: str, entity: DagAccessEntity) -> bool:
        key = (pipeline, entity)
        if key not in self._answers:
            dag_id = dag_id_of(pipeline)
            self._answers[key] = self.manager.is_authorized_dag(
                method="GET",
                access_entity=entity,
                details=DagDetails(id=dag_id, team_name=team_of(dag_id)),
                user=self.user,
            )
        return self._answers[key]

    def may_read_runs(self, pipeline: str) -> bool:
        """Read access to the runs of the pipeline's DAG: its records, charts and reject counts."""
        return self._may(pipeline, DagAccessEntity.RUN)

    def may_read_values(self, pipeline: str) -> bool:
        """Also read access to the DAG's task logs: the rejected rows' values."""
        return self.may_read_runs(pipeline) and self._may(pipeline, DagAccessEntity.TASK_LOGS)

    def readable(self, pipelines: Iterable[str]) -> list[str]:
        """The pipelines of ``pipelines`` the user may list and read, in their order."""
        if self.listed is None:
            self.listed = frozenset(self.manager.get_authorized_dag_ids(user=self.user, method="GET"))
        listed = self.listed
        return [name for name in pipelines if dag_id_of(name) in listed and self.may_read_runs(name)]


def may_trigger(manager: BaseAuthManager[Any], user: BaseUser, pipeline: str) -> bool:
    """What Airflow's trigger endpoint asks: may the user create runs of the pipeline's DAG."""
    dag_id = dag_id_of(pipeline)
    return manager.is_authorized_dag(
        method="POST",
        access_entity=DagAccessEntity.RUN,
        details=DagDetails(id=dag_id, team_name=team_of(dag_id)),
        user=user,
    )


def reader(user: Annotated[Any, Depends(get_user)]) -> Reader:
    """FastAPI dependency: the logged-in user (401/403 without a valid token) and the configured auth manager."""
    from airflow.api_fastapi.app import get_auth_manager

    return Reader(user=user, manager=get_auth_manager())


ReaderDep = Annotated[Reader, Depends(reader)]
