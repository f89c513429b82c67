"""`ltxtrain` command line: check a request, train, or make a sample dataset."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .api.errors import ErrorItem, RequestError
from .encode.stream import AUTO_MIN_WINDOWS, DEFAULT_OBJECT_STORE_BYTES, ENCODER_NODE_RESOURCE, MODES
from .products import endpoints


def _load_request(path: str) -> dict:
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise RequestError(ErrorItem(("request",), f"request file '{path}' not found")) from None
    except json.JSONDecodeError as exc:
        raise RequestError(ErrorItem(("request",), f"request file '{path}' is not valid JSON: {exc}")) from None


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def _strict(args) -> bool:
    """Services run jobs with --strict-urls (or LTXTRAIN_STRICT_URLS=1): dataset and validation URLs may not
    point at loopback, private or link-local addresses, nor at local files."""
    import os

    return bool(getattr(args, "strict_urls", False)) or os.environ.get("LTXTRAIN_STRICT_URLS") == "1"


def cmd_check(args) -> int:
    from .intake.limits import IntakeLimits
    from .jobs import check

    _emit(check(args.endpoint, _load_request(args.request), IntakeLimits(allow_private_addresses=not _strict(args))))
    return 0


def cmd_train(args) -> int:
    from .encode.stream import StreamSettings
    from .intake.limits import IntakeLimits
    from .jobs import JobOptions, run_job

    stream = StreamSettings(mode=args.data_mode, object_store_bytes=args.stream_object_store_mb << 20,
                            encoder_nodes=args.encoder_nodes)
    opts = JobOptions(model=args.model, text_encoder=args.text_encoder, address=args.address,
                      num_workers=args.workers, seed=args.seed, keep_work=args.keep_work,
                      limits=IntakeLimits(allow_private_addresses=not _strict(args)),
                      encoder_actors=args.encoder_actors, stream=stream)
    if args.storage:
        opts.storage = args.storage
    if args.cpu:
        opts.use_gpu = False
    result = run_job(args.endpoint, _load_request(args.request), args.out, opts)
    _emit(json.loads(result.model_dump_json()))
    return 0


def cmd_sample_data(args) -> int:
    from .sampledata import make_dataset_zip

    path = make_dataset_zip(args.zip, kind=args.kind, n=args.n, seconds=args.seconds)
    if args.request:
        payload = {"training_data_url": str(Path(path).resolve()), "number_of_steps": 100, "rank": 8,
                   "resolution": "low", "aspect_ratio": "16:9", "number_of_frames": 9, "learning_rate": 1e-3,
                   "trigger_phrase": "tinystyle", "validation": [{"prompt": "tinystyle a moving square"}],
                   "validation_resolution": "low", "validation_aspect_ratio": "16:9",
                   "validation_number_of_frames": 9}
        Path(args.request).write_text(json.dumps(payload, indent=2))
    _emit({"zip": path, "request": args.request})
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ltxtrain", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="validate a request and its whole dataset without training")
    c.add_argument("endpoint", help=" | ".join(endpoints()))
    c.add_argument("request", help="REQUEST.json")
    c.add_argument("--strict-urls", action="store_true", help="refuse private/loopback URLs and local paths")
    c.set_defaults(func=cmd_check)

    t = sub.add_parser("train", help="run a whole training job")
    t.add_argument("endpoint")
    t.add_argument("request")
    t.add_argument("--out", required=True, help="output directory (result.json, LoRA, config)")
    t.add_argument("--model", default="tiny",
                   help="tiny | a diffusers folder | a single-file .safetensors (local, or an s3:// URI)")
    t.add_argument("--text-encoder", default=None, help="Gemma folder for single-file checkpoints")
    t.add_argument("--address", default=None, help="Ray address (default: local or RAY_ADDRESS)")
    t.add_argument("--workers", type=int, default=None, help="Ray Train workers (default: GPUs, or 2 on CPU)")
    t.add_argument("--cpu", action="store_true", help="train on CPU even if GPUs exist")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--keep-work", action="store_true", help="keep the extracted dataset")
    t.add_argument("--storage", default=None, metavar="URI",
                   help="shared storage for multi-node runs, e.g. s3://bucket/prefix: checkpoints, latent cache and "
                        "model go there so every node can reach them (default: $LTXTRAIN_STORAGE; none: local)")
    t.add_argument("--strict-urls", action="store_true", help="refuse private/loopback URLs and local paths")
    t.add_argument("--data-mode", choices=MODES, default="auto",
                   help="cache: encode every clip, then train; stream: train on clips as they are encoded (Ray Data "
                        f"into the Train workers); auto (default): stream from {AUTO_MIN_WINDOWS} clip windows to encode")
    t.add_argument("--encoder-actors", type=int, default=1, help="VAE/text encoder actors (default 1)")
    t.add_argument("--encoder-nodes", action="store_true",
                   help=f"streaming: run the encoders on nodes offering the '{ENCODER_NODE_RESOURCE}' resource instead "
                        "of sharing the training GPUs")
    t.add_argument("--stream-object-store-mb", type=int, default=DEFAULT_OBJECT_STORE_BYTES >> 20,
                   help="streaming: Ray Data's object-store budget for clips in flight (MiB, default %(default)s)")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample-data", help="write a synthetic dataset zip (and a matching request)")
    s.add_argument("zip")
    s.add_argument("--request", default=None, help="also write a small REQUEST.json for it")
    s.add_argument("--kind", default="video", choices=["video", "image"])
    s.add_argument("-n", type=int, default=4)
    s.add_argument("--seconds", type=float, default=2.0)
    s.set_defaults(func=cmd_sample_data)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RequestError as exc:
        _emit(exc.to_json())
        return 2


if __name__ == "__main__":
    sys.exit(main())
