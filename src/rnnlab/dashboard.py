"""optuna-dashboard on a sweep's study: `python -m rnnlab.dashboard [storage=...] [port=8080]`.

`storage` is a database URL (`sqlite:///outputs/parity-tpe.db`, `postgresql://...`), a sweep dir
(its `optuna.db`, where studies live unless `hydra.sweeper.storage` is given) or a sqlite file;
without it, the newest sweep under `outputs/`. The dashboard follows running sweeps live: trials,
learning curves of every trial (what pruning looked at), parameter importances, Pareto fronts.
It serves on 127.0.0.1 only, unless `host=` says otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from rnnlab.errors import ConfigError

USAGE = (
    "usage: python -m rnnlab.dashboard [storage=<url | sweep dir | file.db>] "
    "[port=8080] [host=127.0.0.1]"
)


def storage_url(storage: str | None, outputs: Path = Path("outputs")) -> str:
    """A database URL from what the user gave (see the module docstring)."""
    if storage is None:
        databases = sorted(outputs.glob("*/multirun/*/optuna.db"), key=lambda p: p.stat().st_mtime)
        if not databases:
            raise ConfigError(
                f"storage: no sweep under {outputs}/; give storage=<url or sweep dir>"
            )
        return f"sqlite:///{databases[-1].resolve()}"
    if "://" in storage:
        return storage
    path = Path(storage)
    path = path / "optuna.db" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"storage={storage}: no study database there; give a URL or sweep dir")
    return f"sqlite:///{path.resolve()}"


def main(argv: Sequence[str] | None = None) -> int:
    args = OmegaConf.from_cli(list(sys.argv[1:] if argv is None else argv))
    unknown = set(args) - {"storage", "port", "host"}
    if unknown:
        print(f"error: unknown option(s) {sorted(unknown)}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        url = storage_url(args.get("storage"))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from optuna_dashboard import run_server

    host, port = args.get("host", "127.0.0.1"), int(args.get("port", 8080))
    print(f"optuna-dashboard on {url}: http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
    run_server(url, host=host, port=port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
