"""Flow parameters checked and coerced from their type hints, with pydantic, as Prefect does.

``@flow def etl(day: datetime.date, limit: int = 10)`` called as ``etl("2024-01-31",
limit="5")`` runs with a `date` and an `int`; ``etl(limit="many")`` raises a
`ParameterError` naming ``limit``, before the run starts. A dict given for a pydantic
model parameter becomes the model. Only given arguments are checked, not defaults;
unannotated parameters, ``*args`` / ``**kwargs`` and resource values pass unchanged.

pydantic is imported, and the model for a flow's parameters built, on the first call
of a flow that has type hints; ``validate_parameters=False`` turns this off.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from tether._errors import ParameterError
from tether._resources import scope_of

_NOT_BUILT: Any = object()
#: Hints whose exact instances pydantic returns unchanged: a value of exactly that type needs no model.
_AS_IS = frozenset({int, str, float, bool, bytes})


class ParameterValidator:
    """Validates one flow's parameters; the pydantic model is built once, on first use."""

    def __init__(self, owner: str, fn: Callable[..., Any], signature: inspect.Signature) -> None:
        self.owner = owner
        self.fn = fn
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        self.names = [p.name for p in signature.parameters.values() if p.kind in kinds and p.annotation is not p.empty]
        self._model: Any = _NOT_BUILT
        self._hints: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The model is a class made at run time: it does not pickle, and is rebuilt on use.
        return {**self.__dict__, "_model": _NOT_BUILT, "_hints": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._model = _NOT_BUILT
        self._hints = None

    @property
    def needed(self) -> bool:
        return bool(self.names)

    def validate(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """``parameters`` with each annotated one coerced to its type; `ParameterError` if one does not fit."""
        given = {n: parameters[n] for n in self.names if n in parameters and scope_of(parameters[n]) is None}
        if not given:
            return parameters
        hints = self._type_hints()
        if all(type(value) is hints.get(name) and type(value) in _AS_IS for name, value in given.items()):
            return parameters  # nothing to check or coerce: pydantic (~0.15 s to import and build) is not needed
        model = self._build()
        if model is None:
            return parameters
        import pydantic  # loaded on the first call of a flow with type hints (see the module docstring)

        try:
            validated = model.model_validate(given)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']} (got {error.get('input')!r})"
                for error in exc.errors()
            )
            raise ParameterError(
                f"{self.owner} got parameters that do not match their type hints: {problems}. "
                "Pass values of the annotated types (or ones pydantic can convert), or decorate "
                "with @flow(validate_parameters=False) to pass them unchecked."
            ) from None
        coerced = dict(parameters)
        for index, name in enumerate(self.names):
            if name in given:
                coerced[name] = getattr(validated, f"p{index}")
        return coerced

    def _type_hints(self) -> dict[str, Any]:
        if self._hints is None:
            try:
                self._hints = typing.get_type_hints(self.fn, include_extras=True)
            except Exception:  # noqa: BLE001 - hints that do not resolve are not checked
                self._hints = {}
        return self._hints

    def _build(self) -> Any:
        if self._model is not _NOT_BUILT:
            return self._model
        import pydantic  # loaded on the first call of a flow with type hints (see the module docstring)

        hints = self._type_hints()
        fields = {
            f"p{index}": (hints.get(name, Any), pydantic.Field(default=None, alias=name))
            for index, name in enumerate(self.names)
        }
        try:
            self._model = pydantic.create_model(  # type: ignore[call-overload]
                "Parameters", __config__=pydantic.ConfigDict(arbitrary_types_allowed=True), **fields
            )
        except Exception:  # noqa: BLE001 - a hint pydantic cannot express is not checked
            self._model = None
        return self._model
