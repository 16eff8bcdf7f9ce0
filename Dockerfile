# Image for every Airflow component in docker-compose.yaml (api-server, scheduler,
# dag-processor, triggerer, Celery workers). The tag must match the apache-airflow pin in
# requirements.lock and the lock's --python-version (tests/unit/test_compose.py checks both).
FROM apache/airflow:3.3.2-python3.11

# The official image only supports pip installs as the airflow user (packages go to its
# user site, not the system Python).
USER airflow

# Copy the lock on its own first so the dependency layer stays cached while code changes.
# The lock is a full `uv pip compile` of requirements.txt and pins apache-airflow itself,
# so pip cannot silently up- or downgrade the Airflow that ships in the base image.
COPY --chown=airflow:0 requirements.lock /opt/airflow/requirements.lock
# --compile-bytecode: every Airflow task is a new process, and images commonly run with
# PYTHONDONTWRITEBYTECODE=1, so without .pyc files each task would compile scikit-learn, SciPy and
# pandas from source again (import sklearn 5.9 s instead of 1.9 s, measured).
RUN pip install --no-cache-dir --compile -r /opt/airflow/requirements.lock

COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/

# Mount point for the model-registry named volume. Creating it here makes Docker seed a fresh
# named volume with airflow ownership instead of root.
RUN mkdir -m 775 /opt/airflow/models

# The project's own modules, compiled like the libraries.
RUN python -m compileall -q /opt/airflow/include /opt/airflow/dags /opt/airflow/plugins

# The batchscore package is imported from source, not pip-installed.
ENV PYTHONPATH=/opt/airflow/include
