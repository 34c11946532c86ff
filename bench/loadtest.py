#!/usr/bin/env python3
"""`make loadtest`: Envoy with and without each filter, under wrk and ab, on
127.0.0.1. The load test is the package in bench/load/ (see its __init__);
this file only runs it, so that every documented command stays the same."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from load.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
