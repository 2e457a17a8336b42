"""`fanout serve`: the HTTP service (API, SSE events, the dashboard page) on loopback."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Annotated

import typer

from fanout.cli.common import (
    BaseUrlOpt,
    ConcurrencyOpt,
    ConfigOpt,
    ModelOpt,
    ProviderOpt,
    RpmOpt,
    SeedOpt,
    SimFaultsOpt,
    SimLatencyOpt,
    TpmOpt,
    engine_choice,
    err,
    exits,
)

DEFAULT_PORT = 8642


def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback exposes the server.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one).")] = DEFAULT_PORT,
    token: Annotated[
        str | None,
        typer.Option(help="The access token (default: $FANOUT_TOKEN, else a new random one)."),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(help="The only folder runs may read and write (default: this one)."),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(help="Another Host name to answer to (a name of this machine)."),
    ] = None,
    max_upload: Annotated[str, typer.Option(help="Largest upload, e.g. 256MB.")] = "256MB",
    config: ConfigOpt = None,
    concurrency: ConcurrencyOpt = None,
    provider: ProviderOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    sim_latency: SimLatencyOpt = None,
    sim_faults: SimFaultsOpt = None,
    seed: SeedOpt = 0,
    cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Answer repeated requests from the cache.")
    ] = True,
    grace: Annotated[
        float, typer.Option(help="Seconds calls in flight may finish when the server stops.")
    ] = 5.0,
) -> None:
    """Serve runs over HTTP: start batch and canvas runs, follow them live, read results.

    Prints the URL to open, with its token (like Jupyter). Every request needs the token."""
    with exits():
        try:
            import uvicorn

            from fanout.service.app import create_app
            from fanout.service.runs import ServiceSettings
        except ImportError as exc:
            err(f"fanout serve needs its extra: pip install 'fanout[serve]' ({exc.name} missing)")
            raise typer.Exit(2) from None
        from fanout.batch.parse import parse_size
        from fanout.errors import ConfigError
        from fanout.store.sqlite import default_path

        tok = token or os.environ.get("FANOUT_TOKEN") or secrets.token_urlsafe(24)
        if len(tok) < 16:
            raise ConfigError("--token: use at least 16 characters (or leave it out for a new one)")
        folder = Path(os.getcwd()) if root is None else root
        if not folder.is_dir():
            raise ConfigError(f"--root {folder}: not a folder; give the folder runs may use")
        choice = engine_choice(
            config=config,
            provider=provider,
            model=model,
            base_url=base_url,
            command=None,
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            timeout=None,
            attempts=None,
            sim_latency=sim_latency,
            sim_faults=sim_faults,
            seed=seed,
        )
        settings = ServiceSettings(
            root=folder, store_path=default_path(), choice=choice, cache=cache, grace_s=grace
        )
        limit = parse_size("--max-upload", max_upload)

        sock = _bind(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host

        def ready(manager: object, resumed: list[str]) -> None:
            note = getattr(manager, "note", None)
            if note:
                err(note)
            for rid in resumed:
                err(f"resumed run {rid} (left unfinished by the last server)")
            # the one place the token is shown: the URL to open, as Jupyter prints it
            typer.echo(f"fanout: serving {settings.root}")
            typer.echo(f"    http://{shown}:{bound}/?token={tok}", err=False)

        app = create_app(
            settings,
            token=tok,
            host=host,
            allow_hosts=tuple(allow_host or ()),
            max_upload=limit,
            on_ready=ready,
        )
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        )
        server.run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts so the URL printed names the
    port even when it was 0 (any free one)."""
    from fanout.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog until the app is up
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there ({exc.strerror}); "
            "pick another --port (0: any free one)"
        ) from None
    sock.set_inheritable(True)
    return sock
