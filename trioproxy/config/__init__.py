"""Settings: attrs records built with cattrs from a TOML file, a `.env` file, the environment and
command-line flags.

`schema.py` holds the records and each key's own check, `checks.py` the checks across keys,
`load.py` the loading (with `env.py`, the original environment variable names), `redaction.py`
what `--check-config` shows and what the logs hide, `derived.py` the figures the rest of the
proxy derives from settings, `redis_target.py` the parsing of `redis_url`.
"""
