"""Small pieces every stage script shares: logging set-up and one-line errors."""
from __future__ import annotations

import contextlib
import logging

import click

from ftllm.config import ConfigError
from ftllm.io import InputError


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


@contextlib.contextmanager
def one_line_errors():
    """Turn bad input and bad params into one clear line and a non-zero exit (no traceback)."""
    try:
        yield
    except (InputError, ConfigError) as err:
        raise click.ClickException(str(err)) from None
