"""Command line and uvicorn start shared by the benchmark's reference apps (``baseline_app``,
``noauth_app``)."""

from __future__ import annotations

import argparse


def server_arguments(description: str, port: int) -> argparse.ArgumentParser:
    """A parser with ``--host``, ``--port`` (default ``port``) and ``--workers``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--workers", type=int, default=1)
    return parser


def serve(factory: str, args: argparse.Namespace, log_level: str) -> None:
    """Run the app ``factory`` makes with the same uvicorn.run arguments as patientkontrakt.cli serve."""
    import uvicorn

    uvicorn.run(factory, factory=True, host=args.host, port=args.port, workers=args.workers,
                log_level=log_level, proxy_headers=True, access_log=False)
