"""The ``frugalserve`` command.

Each subcommand lives in its own module with ``configure(parser)`` and ``run(args) -> int``, imported only
when chosen, so ``frugalserve up`` never imports torch and ``frugalserve engine`` never imports the gateway.

Options are accepted anywhere after the subcommand: every command that loads a config gets ``--config``
here, and a command's own options are also accepted after its action (``keys create --name a --config
f.yaml``), which argparse does not do by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

DESCRIPTION = (
    "frugalserve: an OpenAI-compatible gateway for Qwen3-VL model servers, with scale-to-zero backends,"
    " exact token budgets and GPU cost accounting."
)
CONFIG_HELP = "config file (default: $FRUGALSERVE_CONFIG or the built-in demo config)"


@dataclass(frozen=True)
class Command:
    module: str
    help: str
    loads_config: bool = False  # gets --config


COMMANDS: dict[str, Command] = {
    "up": Command("frugalserve.commands.up", "run the gateway", loads_config=True),
    "check-config": Command(
        "frugalserve.commands.check_config", "load a config file and report the first error", loads_config=True
    ),
    "tokens": Command(
        "frugalserve.commands.tokens", "show what images cost in Qwen3-VL tokens, before and after the budget"
    ),
    "engine": Command("frugalserve.engine.cli", "serve a local Qwen3-VL / Qwen3 checkpoint (built-in model server)"),
    "demo-model": Command("frugalserve.engine.demo_model", "write the tiny random-weight demo checkpoint"),
    "keys": Command("frugalserve.commands.keys", "create, list and revoke API keys", loads_config=True),
    "report": Command(
        "frugalserve.commands.report", "GPU cost, tokens and savings from the usage records", loads_config=True
    ),
    "simulate": Command(
        "frugalserve.commands.simulate",
        "replay traffic through the gateway's policies on a virtual clock: cost and latency of each policy",
        loads_config=True,
    ),
    "gpus": Command(
        "frugalserve.commands.gpus", "the GPUs NVML sees and the pools on each (GPU telemetry)", loads_config=True
    ),
}


def _add_common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP)


def _accept_options_after_actions(p: argparse.ArgumentParser) -> None:
    """Give every nested action parser (``keys create``) its command's options too.

    The copies default to SUPPRESS: argparse copies a nested parser's namespace over its parent's, so a
    real default there would erase a value given before the action (``keys --config f.yaml create``).
    argparse has no public way to list a parser's actions; ``_actions`` has been stable since Python 3.2.
    """
    options = [a for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    for action in p._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for nested in set(action.choices.values()):
            for option in options:
                shared = copy.copy(option)
                shared.default = argparse.SUPPRESS
                shared.required = False
                with contextlib.suppress(argparse.ArgumentError):  # the action has its own option of that name
                    nested._add_action(shared)
            _accept_options_after_actions(nested)


def build_parser() -> argparse.ArgumentParser:
    from frugalserve import __version__

    parser = argparse.ArgumentParser(prog="frugalserve", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"frugalserve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        p.set_defaults(_module=command.module)
        importlib.import_module(command.module).configure(p)
        if command.loads_config:
            _add_common_options(p)
        _accept_options_after_actions(p)
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
