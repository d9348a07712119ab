"""`neuralcodes serve`: the search page and JSON API of an index, under uvicorn."""

from __future__ import annotations

import argparse
import ipaddress

from rich.markup import escape

from neuralcodes.progress import console

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a web page (and JSON API) to search an index by example")
    p.add_argument("index", help="an index folder made by `neuralcodes index build`")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)",
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--max-upload-mb", type=float, default=20.0, help="largest image a visitor may upload (MiB)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)")
    p.set_defaults(func=_serve)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> None:
    import os

    import uvicorn

    from neuralcodes.index.index import Index
    from neuralcodes.serve.app import create_app

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    os.environ["NEURALCODES_NO_PROGRESS"] = (
        "1"  # a server logs requests; a progress bar per search is noise
    )
    index = Index.open(args.index, device=args.device)
    index.load_model()  # load (and verify) it now, not on the first visitor's request
    local = is_loopback(args.host)
    # Only loopback names are accepted in the Host header of a local server: a web page elsewhere
    # cannot reach it through DNS rebinding.
    hosts = [*LOOPBACK_NAMES, "[::1]", args.host] if local else None
    app = create_app(index, int(args.max_upload_mb * 2**20), allowed_hosts=hosts)
    if not local:
        console.print(
            f"[yellow]warning:[/yellow] listening on {escape(args.host)}: anyone who can reach this "
            "machine can search the collection and see its images"
        )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    console.print(
        f"search page: http://{escape(shown)}:{args.port}/  (API schema: /openapi.json, /docs)"
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", server_header=False)
    finally:
        index.close()
