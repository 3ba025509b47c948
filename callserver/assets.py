"""Where the browser code lives: inside the installed package, or beside it in a source checkout."""

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).parent


@cache
def asset_dir(name: str) -> Path:
    """The folder of `web_button` or `operator_softphone`."""
    for candidate in (_PACKAGE / "_assets" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{name}/ is neither in the package nor beside it")
