"""``python -m bench``: see ``bench.runner`` and docs/performance.md."""

from bench.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
