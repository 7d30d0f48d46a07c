"""The Lua scripts trioproxy runs in Redis (files beside this module), each after the prelude
they share (`now.lua`: the time the caller passed, or Redis's)."""

from importlib import resources


def script(name: str) -> str:
    """The text to run for the script file `name`: the prelude, then the file."""
    folder = resources.files(__package__)
    return folder.joinpath("now.lua").read_text() + folder.joinpath(name).read_text()
