"""The ``frugalserve`` command.

Each subcommand lives in its own module with ``configure(parser)`` and ``run(args) -> int``, imported only
when chosen, so ``frugalserve up`` never imports torch and ``frugalserve engine`` never imports the gateway.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("frugalserve.commands.up", "run the gateway"),
    "check-config": ("frugalserve.commands.check_config", "load a config file and report the first error"),
    "tokens": (
        "frugalserve.commands.tokens",
        "show what images cost in Qwen3-VL tokens, before and after the budget",
    ),
    "engine": ("frugalserve.engine.cli", "serve a local Qwen3-VL / Qwen3 checkpoint (built-in model server)"),
    "demo-model": ("frugalserve.engine.demo_model", "write the tiny random-weight demo checkpoint"),
    "keys": ("frugalserve.commands.keys", "create, list and revoke API keys"),
    "report": ("frugalserve.commands.report", "GPU cost, tokens and savings from the usage records"),
}


def build_parser() -> argparse.ArgumentParser:
    from frugalserve import __version__

    parser = argparse.ArgumentParser(prog="frugalserve", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"frugalserve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
