"""Deploy the service onto a running Ray cluster and return (the application keeps running there):

    python -m serve.deploy --address 127.0.0.1:6379 --host 127.0.0.1 --port 8000 [--config serve.json]
                           [--ssl-certfile cert.pem --ssl-keyfile key.pem]   # HTTPS (what fal-client speaks)

The configuration is `ServeConfig.from_env()` (LTXTRAIN_SERVE_* variables, see serve/config.py), or a JSON file of
ServeConfig fields. The repository is shipped as the driver's working_dir, which the Serve replicas inherit (Ray only
accepts local directories at the job level). Remove it with `serve shutdown` (or `serve.delete("ltxtrain")`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .config import ServeConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.deploy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default="auto", help="Ray address (default: auto / RAY_ADDRESS)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP proxy host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", default="ltxtrain", help="Serve application name")
    p.add_argument("--config", default=None, help="JSON file of ServeConfig fields (default: environment)")
    p.add_argument("--ssl-certfile", default=None, help="PEM certificate (chain): serve HTTPS (Ray Serve's proxy)")
    p.add_argument("--ssl-keyfile", default=None, help="PEM private key of --ssl-certfile")
    args = p.parse_args(argv)
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        p.error("--ssl-certfile and --ssl-keyfile go together")

    import ray
    from ray import serve

    from .app import build_app

    if args.config:
        with open(args.config) as fh:
            config = ServeConfig(**json.load(fh))
    else:
        config = ServeConfig.from_env()
    excludes = [".git", ".venv", "out", "runs", "__pycache__", ".pytest_cache"]
    ray.init(address=args.address, runtime_env={"working_dir": config.repo_root, "excludes": excludes},
             log_to_driver=False)
    http = {"host": args.host, "port": args.port}
    if args.ssl_certfile:  # absolute: the proxy actor does not run in this directory
        http.update(ssl_certfile=os.path.abspath(args.ssl_certfile), ssl_keyfile=os.path.abspath(args.ssl_keyfile))
    serve.start(http_options=http)
    serve.run(build_app(config), name=args.name, route_prefix="/")
    scheme = "https" if args.ssl_certfile else "http"
    print(json.dumps({"url": f"{scheme}://{args.host}:{args.port}/", "app": args.name}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
