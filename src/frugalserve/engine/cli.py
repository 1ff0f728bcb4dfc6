"""``frugalserve engine``: serve a local Qwen3-VL / Qwen3 checkpoint with vLLM's HTTP contract."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        metavar="PATH",
        help="a local Hugging Face checkpoint directory ('demo' = the demo model in the cache)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    p.add_argument("--served-model-name", help="the model id clients send (default: the directory's name)")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default 8)")
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=20.0,
        help="after a request arrives, wait this long for others to start with it (default 20)",
    )
    p.add_argument(
        "--vision-cache-mb",
        type=float,
        default=256.0,
        help="LRU cache of vision-encoder outputs, in MB (0 = off)",
    )
    p.add_argument("--default-max-tokens", type=int, default=256, help="chat max_tokens when a request gives none")
    images = p.add_argument_group("image URLs (off by default: the gateway sends images inline as data: URLs)")
    images.add_argument(
        "--allow-remote-images",
        action="store_true",
        help="fetch http(s) image URLs (public addresses only, redirects re-checked, size and time limits)",
    )
    images.add_argument(
        "--image-fetch-allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="a host fetched even if it resolves to a private or loopback address ('*.corp.example'); repeatable",
    )
    images.add_argument("--max-image-mb", type=float, default=20.0, help="largest image, fetched or inline (20)")
    images.add_argument("--image-fetch-timeout-s", type=float, default=10.0, help="whole fetch time limit (10)")
    images.add_argument("--image-max-redirects", type=int, default=3, help="redirects followed, each checked (3)")
    p.add_argument("--log-level", default="warning")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import uvicorn

    from frugalserve.engine.demo_model import ensure_demo_model
    from frugalserve.engine.server import EngineSettings, create_engine_app

    model = ensure_demo_model() if args.model == "demo" else Path(args.model)
    if not (model / "config.json").exists():
        print(f"error: --model {args.model}: no config.json there (a local checkpoint directory is needed)")
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda: torch sees no CUDA device")
            return 2
    name = args.served_model_name or ("frugalserve-demo" if args.model == "demo" else None)
    settings = EngineSettings(
        model=model,
        served_model_name=name,
        device=args.device,
        dtype=args.dtype,
        max_batch=args.max_batch,
        batch_window_ms=args.batch_window_ms,
        vision_cache_mb=args.vision_cache_mb,
        default_max_tokens=args.default_max_tokens,
        allow_remote_images=args.allow_remote_images,
        image_fetch_allow_hosts=tuple(args.image_fetch_allow_host),
        max_image_mb=args.max_image_mb,
        image_fetch_timeout_s=args.image_fetch_timeout_s,
        image_max_redirects=args.image_max_redirects,
    )
    for flag, ok in (
        ("--max-image-mb", args.max_image_mb > 0),
        ("--image-fetch-timeout-s", args.image_fetch_timeout_s > 0),
        ("--image-max-redirects", args.image_max_redirects >= 0),
    ):
        if not ok:
            print(f"error: {flag} must be {'>= 0' if flag == '--image-max-redirects' else '> 0'}")
            return 2
    uvicorn.run(
        create_engine_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
    )
    return 0
