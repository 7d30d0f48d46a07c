"""Test doubles shipped with the package: the emulated providers that `--demo` also uses."""
