"""`harness serve`: serve a model over an OpenAI-compatible HTTP API (the server is harness/serve.py)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from harness.errors import HarnessError

HELP = "serve a model over an OpenAI-compatible HTTP API"
# harness.serve.KEY_ENV, spelt out so that building the parser does not import the server and torch
KEY_ENV = "HARNESS_SERVE_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default="smollm2-135m", metavar="SPEC",
                        help="model spec, as for `harness run` (default smollm2-135m)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--name", help="the model id clients use (default: the model's name)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="weights' dtype (default auto: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto: CUDA where torch sees a GPU)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size of the backend (default 8)")
    parser.add_argument("--parallel", type=int, default=None, metavar="N",
                        help="model calls at once (default 4 for hf; other backends take one at a time)")
    parser.add_argument("--request-timeout", type=float, default=600.0, metavar="SECONDS",
                        help="stop a request's model call after this long and answer 504 (default 600; 0: never)")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--api-key-env", default=KEY_ENV, metavar="NAME",
                        help=f"require the API key held in this environment variable, when set (default {KEY_ENV})")


def _check_arguments(args: argparse.Namespace) -> None:
    """Settings that can be refused before the model loads (loading takes a while)."""
    if not 0 <= args.port <= 65535:
        raise HarnessError(f"serve --port {args.port}: a port is a number from 0 to 65535 (0 picks a free one)")
    if args.parallel is not None and args.parallel < 1:
        raise HarnessError(f"serve --parallel {args.parallel}: give at least 1")
    if args.request_timeout < 0:
        raise HarnessError(f"serve --request-timeout {args.request_timeout:g}: give seconds, or 0 for no limit")


def run(args: argparse.Namespace) -> int:
    from harness.models import load_model
    from harness.serve import make_server

    _check_arguments(args)
    model = load_model(args.model, dtype=args.dtype, device=args.device, batch_size=args.batch_size,
                       trust_remote_code=args.trust_remote_code)
    api_key = os.environ.get(args.api_key_env) or None
    try:
        server = make_server(model, args.host, args.port, name=args.name, api_key=api_key, parallel=args.parallel,
                             request_timeout=args.request_timeout or None)
    except (OSError, OverflowError) as err:
        model.close()
        reason = getattr(err, "strerror", None) or str(err)
        raise HarnessError(f"cannot listen on {args.host}:{args.port}: {reason}") from None
    host, port = server.server_address[:2]
    if host not in ("127.0.0.1", "::1", "localhost") and not api_key:
        print(f"warning: listening on {host} without an API key: anyone who reaches this port can use the model",
              file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"serving {model.info.spec} as {server.service.name!r} on http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.service.workers.stop()  # no generation may outlive the interpreter (SIGTERM)
        server.server_close()
        model.close()
    return 0
