"""What every recipe does at its edges: bad input becomes one line on stderr and exit code 2, never a traceback.

Library calls raise exceptions that name the argument or record; a recipe's ``main`` runs under :func:`run_recipe`,
which prints ``<recipe>: error: <message>`` (the message folded onto one line) and exits with 2, as argparse does for
bad flags. ``PEFT_VIDEO_TRACEBACK=1`` re-raises instead, for debugging.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

EXIT_BAD_INPUT = 2
TRACEBACK_ENV = "PEFT_VIDEO_TRACEBACK"


def fail(message: str, program: str | None = None) -> NoReturn:
    """Print ``<program>: error: <message>`` as one line on stderr and exit with code 2."""
    name = program or Path(sys.argv[0]).name
    print(f"{name}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)


def run_recipe(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``main``; any exception (but an interrupt or ``SystemExit``) ends the process through :func:`fail`."""
    try:
        return main(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - the recipe's edge: every error becomes one line
        if os.environ.get(TRACEBACK_ENV):
            raise
        fail(str(error) or type(error).__name__)


def positive_int(value: object, argument: str) -> int:
    """``value`` if it is a positive integer, else a ``ValueError`` naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{argument}` must be a positive integer, got {value!r}")
    return value


def quiet_libraries(quiet: bool) -> None:
    """Keep library chatter out of a recipe's output: transformers' warnings always (errors still show); with
    ``quiet`` also the progress bars of transformers (weight loading) and datasets (map, filter)."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    # peft asks transformers whether gradient checkpointing is on through a name transformers 5 deprecates; the
    # warning is about peft's call, not the user's code, and repeats for every LoRA run.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    if quiet:
        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()
