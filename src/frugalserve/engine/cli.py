"""``frugalserve engine``: serve a local Qwen3-VL / Qwen3 checkpoint with vLLM's HTTP contract."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from frugalserve.engine.server import EngineSettings


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
    from frugalserve.engine.server import create_engine_app

    model = ensure_demo_model() if args.model == "demo" else Path(args.model)
    if not (model / "config.json").exists():
        print(f"error: --model {args.model}: no config.json there (a local checkpoint directory is needed)")
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda: torch sees no CUDA device")
            return 2
    problem = _check_image_flags(args)
    if problem:
        print(f"error: {problem}")
        return 2
    uvicorn.run(
        create_engine_app(settings_from_args(args, model)),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
    )
    return 0


def _check_image_flags(args: argparse.Namespace) -> str | None:
    if args.max_image_mb <= 0:
        return "--max-image-mb must be > 0"
    if args.image_fetch_timeout_s <= 0:
        return "--image-fetch-timeout-s must be > 0"
    if args.image_max_redirects < 0:
        return "--image-max-redirects must be >= 0"
    return None


def settings_from_args(args: argparse.Namespace, model: Path) -> EngineSettings:
    from frugalserve.engine.server import EngineSettings

    return EngineSettings(
        model=model,
        served_model_name=args.served_model_name or ("frugalserve-demo" if args.model == "demo" else None),
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
