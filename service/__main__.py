"""``python -m service``: see service/cli.py."""

from service.cli import main

if __name__ == "__main__":  # vLLM spawns processes that re-import __main__
    raise SystemExit(main())
