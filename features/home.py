"""Where the project keeps its state, whatever folder a command runs from.

One home holds the embedded MLflow store (`mlruns/`: the SQLite tracking database and the
artifacts beside it), the service's campaign log (`data/campaign_log.db`) and the service
config `retention serve` writes (`serve.yaml`). The home is `--home`, else $RETENTION_HOME,
else `~/.local/share/retention`. Files that may hold credentials (URLs with passwords) are
written readable by their owner only.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "RETENTION_HOME"
DEFAULT_HOME = Path("~/.local/share/retention")


def state_home(home: str | Path | None = None) -> Path:
    """The state folder: `home`, else $RETENTION_HOME, else DEFAULT_HOME (absolute).

    Examples
    --------
    >>> str(state_home("/srv/retention"))
    '/srv/retention'
    """
    chosen = home or os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


def mlruns_dir(home: str | Path | None = None) -> Path:
    """The embedded MLflow store of the home."""
    return state_home(home) / "mlruns"


def campaign_log_url(home: str | Path | None = None) -> str:
    """The service's default campaign log: a SQLite file in the home."""
    return f"sqlite:///{state_home(home) / 'data' / 'campaign_log.db'}"


def serve_config_path(home: str | Path | None = None) -> Path:
    """Where `retention serve` writes the service config it starts the service with."""
    return state_home(home) / "serve.yaml"


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable and writable by its owner only (0600), also when the
    file already existed with wider permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
