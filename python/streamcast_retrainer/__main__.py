"""`python -m streamcast_retrainer --help`"""

from __future__ import annotations

import signal
import sys


def main(argv: list[str] | None = None) -> int:
    from .config import parse
    from .service import run, setup_logging

    settings = parse(argv)
    setup_logging(settings.log_format)
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return run(settings, stop=lambda: bool(stopping))


if __name__ == "__main__":
    sys.exit(main())
