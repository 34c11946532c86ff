"""`make loadtest` as a small package: `env` (paths, the run's settings),
`configs` (Envoy bootstraps and nginx configs from the samples in envoy/),
`procs` (backends, the engine, Envoy, nginx, containers), `measure` (wrk,
paired runs), `scenarios` (seed scenarios), `report` (tables, JSON, chart),
`cli` (the command line). `python3 bench/loadtest.py` runs it."""
