"""``python -m service``: see service/cli/main.py."""

from service.cli.main import main

if __name__ == "__main__":  # vLLM spawns processes that re-import __main__
    raise SystemExit(main())
