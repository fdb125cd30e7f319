"""Code a person names, ``module:function`` or ``file.py:function``: imported and called only when it comes
from the command line or the API (a file never names code), its failures one error line.

To find ``package.module`` in the working directory, the directory is appended to ``sys.path``, never put
first, so a stray ``numpy.py`` there cannot shadow an installed module.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

from layermod.errors import LayermodError, ModelError, one_line

__all__ = ["call_user_function", "import_object"]


def import_object(spec: str, *, error: type[Exception] = ModelError) -> object:
    """The object named by ``"module.path:attr"`` or ``"file.py:attr"``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise error(f"cannot read {spec!r}; write it as module.path:function or file.py:function")
    if module_name.endswith(".py") and not Path(module_name).is_file():
        raise error(f"no file {module_name}; check the path in {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.append(os.getcwd())
            module = importlib.import_module(module_name)
    except ImportError as err:
        raise error(f"cannot import {module_name!r} ({err}); check the name and that it is installed") from None
    except Exception as err:  # noqa: BLE001  (importing runs the user's module, which may raise anything)
        reason = one_line(err)
        raise error(f"importing {module_name!r} raised {type(err).__name__}: {reason}; fix that module") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise error(f"{module_name!r} has no attribute {attr!r}") from None


def call_user_function(spec: str, function: Callable[[], object], error: type[Exception]) -> object:
    """``function()``, the user's code named by ``spec``; whatever it raises becomes one ``error`` line."""
    try:
        return function()
    except LayermodError:
        raise
    except Exception as err:  # noqa: BLE001  (the user's code may raise anything)
        reason = one_line(err)
        raise error(f"{spec} raised {type(err).__name__}: {reason}; fix that function or call it yourself") from None
