"""The ``.env`` file docker-compose.yaml reads, written with fresh secrets by one command.

docker-compose.yaml takes every secret from ``.env`` and has a default for none
(``${VAR:?...}``), so ``docker compose up`` refuses to start without them. ``.env.example``
names every setting with an empty value for each secret; :func:`write_env` copies it, gives
each secret a fresh random value, and creates the file with mode 0600. It never replaces an
existing ``.env`` unless asked: PostgreSQL keeps the password a volume was created with, so
new secrets for existing volumes lock the services out of their databases.
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
from pathlib import Path

# Every secret docker-compose.yaml requires, with its random bytes. Hex for the passwords and
# tokens: URL-safe (they sit in connection URIs) and never read as an option by a command line.
SECRET_BYTES: dict[str, int] = {
    "AIRFLOW_ADMIN_PASSWORD": 16,
    "AIRFLOW_DB_PASSWORD": 24,
    "WAREHOUSE_DB_PASSWORD": 24,
    "SCORES_DB_PASSWORD": 24,
    "REDIS_PASSWORD": 24,
    "FLOWER_PASSWORD": 16,
    "AIRFLOW_JWT_SECRET": 64,  # an HS512 key: as long as the hash's block
    "AIRFLOW_API_SECRET_KEY": 32,
}
FERNET_KEY = "AIRFLOW_FERNET_KEY"  # Fernet's format: 32 random bytes, URL-safe base64
SECRETS = (*SECRET_BYTES, FERNET_KEY)
# The Airflow image's user; kept when the generator runs as root (files in ./logs stay the image's).
IMAGE_UID = 50000


def fresh_secret(name: str) -> str:
    """A new random value for the secret ``name`` (one of :data:`SECRETS`)."""
    if name == FERNET_KEY:
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    return secrets.token_hex(SECRET_BYTES[name])


def render(template: str, uid: int) -> str:
    """``template`` (the text of .env.example) with a fresh value for each secret and ``AIRFLOW_UID``.

    Comments and every other setting are kept as they are. Raises ValueError when the template
    has no ``NAME=`` line for one of :data:`SECRETS`.
    """
    lines, seen = [], set()
    for line in template.splitlines():
        name, assigns, _ = line.partition("=")
        setting = name if assigns and not line.lstrip().startswith("#") else None
        if setting in SECRETS:
            lines.append(f"{setting}={fresh_secret(setting)}")
            seen.add(setting)
        elif setting == "AIRFLOW_UID":
            lines.append(f"AIRFLOW_UID={uid or IMAGE_UID}")
        else:
            lines.append(line)
    missing = sorted(set(SECRETS) - seen)
    if missing:
        raise ValueError(f".env.example: no line for {', '.join(missing)}; add `NAME=` for each")
    return "\n".join(lines) + "\n"


def write_env(path: Path, template: Path, *, force: bool = False) -> list[str]:
    """Write ``path`` from ``template`` with fresh secrets, mode 0600; returns the secrets' names.

    Raises FileExistsError when ``path`` exists and not ``force``; with ``force`` the old file is
    replaced in one rename (a reader sees the old file or the new one).
    """
    text = render(template.read_text(), os.getuid())
    if not force:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise FileExistsError(
                f"{path} exists: keep it, or replace it with --force (new secrets: the databases' "
                "volumes keep the old passwords, so remove them too: docker compose down -v)"
            ) from None
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(text)
        return list(SECRETS)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".env.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return list(SECRETS)
