"""Command line of the benchmarks: ``python -m skhypernet.benchmarks COMMAND``."""

import argparse
import sys

from . import speed


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m skhypernet.benchmarks")
    commands = parser.add_subparsers(dest="command", required=True)
    speed.add_arguments(commands.add_parser("speed", help=speed.__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    return {"speed": speed.run}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
