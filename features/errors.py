"""The one error type for a user's mistake, and the one way a config's validation error reads."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

Location = tuple[int | str, ...]


class DataError(Exception):
    """Bad input the user can fix (file, column, value); the CLI prints it as one line."""


def config_error(exc: ValidationError, source: object | None, *,
                 locate: Callable[[Location], str | None] | None = None) -> DataError:
    """The first error of a pydantic validation as one line: "<source>: <where>: <what>".

    `where` is the dotted path of the field ("columns.amount"), or what `locate` makes of it
    (e.g. an offer's id instead of its list index); `source` names the file or option.

    Examples
    --------
    >>> from pydantic import BaseModel
    >>> class Bands(BaseModel):
    ...     high: float
    >>> try:
    ...     Bands.model_validate({"high": "x"})
    ... except ValidationError as exc:
    ...     print(config_error(exc, "bands.yaml"))
    bands.yaml: high: Input should be a valid number, unable to parse string as a number
    """
    err = exc.errors()[0]
    loc: Location = tuple(err["loc"])
    where = (locate(loc) if locate else None) or ".".join(str(p) for p in loc) or "config"
    prefix = f"{source}: " if source is not None else ""
    message = str(err["msg"]).removeprefix("Value error, ")  # a validator's own words
    return DataError(f"{prefix}{where}: {message}")
