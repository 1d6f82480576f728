"""Entry point placeholder; the command tree is built in seg_cli.app."""


def main() -> None:
    raise SystemExit("seg: the command line is being set up")
