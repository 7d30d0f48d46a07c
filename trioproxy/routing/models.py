"""Which client model names the proxy serves: its model and the aliases that map onto it."""

from fnmatch import fnmatchcase

from attrs import frozen

from ..errors import ProxyError


@frozen
class ModelNames:
    """The served model and its aliases (exact names or globs such as `claude-*`)."""

    served: str
    aliases: tuple[str, ...] = ()

    def resolve(self, name: object) -> str:
        """The served model `name` stands for; a 404 naming the served model otherwise."""
        if not isinstance(name, str) or not name:
            raise ProxyError(400, "`model` is required and must be a string.", code="invalid_type", param="model")
        if name == self.served or any(fnmatchcase(name, alias) for alias in self.aliases):
            return self.served
        raise ProxyError(
            404,
            f"The model `{name}` does not exist. This proxy serves `{self.served}`"
            " (other names can be mapped to it with the `model_aliases` setting).",
            code="model_not_found",
            param="model",
        )
