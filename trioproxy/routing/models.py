"""Which client model names the proxy serves: one name per route, and the aliases that map onto it."""

from collections.abc import Sequence
from fnmatch import fnmatchcase

from attrs import evolve, field, frozen

from ..errors import ProxyError, quoted
from .limits import RouteLimits


@frozen
class ServedModel:
    """A route's client-visible name and its aliases (exact names or globs such as `claude-*`)."""

    name: str
    aliases: tuple[str, ...] = ()
    limits: RouteLimits = RouteLimits(None, None)  # what model lists tell clients of its size


def _exact_names(models: Sequence[ServedModel]) -> dict[str, str]:
    """Exact names first (a route's own name wins over another's alias), then exact aliases."""
    exact = {model.name: model.name for model in models}
    for model in models:
        for alias in model.aliases:
            exact.setdefault(alias, model.name)
    return exact


@frozen
class ModelNames:
    """The routes' names; `resolve` turns what a client asked for into a route name."""

    models: tuple[ServedModel, ...]
    offered: tuple[str, ...] | None = None  # the names a 404 offers (None: every route's)
    _exact: dict[str, str] = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_exact", _exact_names(self.models))

    @property
    def served(self) -> str:
        """The first route's name: the model of a proxy with one route."""
        return self.models[0].name

    @property
    def names(self) -> list[str]:
        return [model.name for model in self.models]

    def for_routes(self, routes: frozenset[str]) -> "ModelNames":
        """The names a client limited to `routes` sees (all of them when `routes` is empty): its
        model lists and cards show no other route, and another route's name is unknown to it."""
        if not routes:
            return self
        return ModelNames(tuple(model for model in self.models if model.name in routes))

    def offering(self, routes: frozenset[str]) -> "ModelNames":
        """These names, whose 404 for an unknown name offers only `routes` (a client limited to
        them; all when empty). Every route still resolves, for admission to refuse another
        route with a 403 that says so."""
        if not routes:
            return self
        return evolve(self, offered=tuple(name for name in self.names if name in routes))

    def card(self, name: object) -> ServedModel:
        """The route `name` stands for, with what model lists say of it; errors as `resolve`."""
        route = self.resolve(name)
        return next(model for model in self.models if model.name == route)

    def resolve(self, name: object) -> str:
        """The route `name` stands for; a 404 naming the served models otherwise."""
        if not isinstance(name, str) or not name:
            raise ProxyError(400, "`model` is required and must be a string.", code="invalid_type", param="model")
        route = self._exact.get(name)
        if route is not None:
            return route
        for model in self.models:
            if any(fnmatchcase(name, alias) for alias in model.aliases):
                return model.name
        served = ", ".join(f"`{model}`" for model in (self.names if self.offered is None else self.offered))
        raise ProxyError(
            404,
            f"The model `{quoted(name)}` does not exist. This proxy serves {served}"
            " (other names can be mapped to a model with aliases: the `model_aliases` setting,"
            " or `aliases` in a [[models]] route).",
            code="model_not_found",
            param="model",
        )
