"""A tool's settings as a frozen dataclass whose fields declare its parameters: one declaration for
what the loader checks and what the tool reads.

The loader checks a node's values against the tool's `Param`s, and the tool reads them as typed
attributes of its settings. Each field holds its `Param` (`setting`), and `params_of` lists them,
in field order, for the `Tool`: a parameter cannot be declared without the attribute that holds
it, nor an attribute added that no parameter fills, and a field named otherwise than its
parameter fails the plugin's import, not the first run that opens the tool.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from videodag_service.dag import Param

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_PARAM = "videodag.param"


def setting(param: Param) -> Any:
    """A settings field holding the value of `param`, which it declares; the field takes the parameter's name.

    The field has no default: the loader hands a tool every declared parameter, defaults filled in."""
    return dataclasses.field(metadata={_PARAM: param})


def params_of(settings: type[DataclassInstance]) -> tuple[Param, ...]:
    """The parameters the fields of `settings` declare, in field order; refuses a field that declares none
    or one named otherwise than its parameter."""
    params: list[Param] = []
    for field in dataclasses.fields(settings):
        param = field.metadata.get(_PARAM)
        if not isinstance(param, Param):
            raise TypeError(f"{settings.__qualname__}.{field.name} declares no parameter: give it setting(Param(...))")
        if param.name != field.name:
            raise TypeError(f"{settings.__qualname__}.{field.name} declares parameter {param.name!r}: "
                            "name the field as its parameter")
        params.append(param)
    return tuple(params)
