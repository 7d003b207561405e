"""The `retention` command: one entry point, sub-commands grown by each layer.

`retention serve` is parsed by an app holding that command alone, so that starting the service
does not import the other commands (the feature engine, the model library, MLflow).
"""

from __future__ import annotations

import sys
from functools import cache

import typer
from rich.console import Console

from features.errors import DataError
from serving.commands import serve_cmd

HELP = ("Churn and targeting service: data, features, train, models, score, serve, report, "
        "console, campaign-log.")
LIGHT = "serve"  # the command parsed without importing the others


def _typer(**extra: object) -> typer.Typer:
    return typer.Typer(help=HELP, no_args_is_help=True, pretty_exceptions_enable=False, **extra)


@cache
def full_app() -> typer.Typer:
    """Every command."""
    from features.cli import data_app, demo_data_cmd, features_app
    from serving.commands import campaign_log_app, publish_cmd, score_cmd
    from serving.console.report import report_cmd
    from serving.console.users import console_app
    from training.cli import models_app, train_app

    app = _typer()
    app.add_typer(data_app, name="data")
    app.add_typer(features_app, name="features")
    app.command("demo-data")(demo_data_cmd)
    app.add_typer(train_app, name="train")
    app.add_typer(models_app, name="models")
    app.command("score")(score_cmd)
    app.command("serve")(serve_cmd)
    app.command("report")(report_cmd)
    app.add_typer(console_app, name="console")
    app.add_typer(campaign_log_app, name="campaign-log")
    features_app.command("publish")(publish_cmd)
    return app


def serve_app() -> typer.Typer:
    """`serve` alone (a callback keeps it a sub-command: `retention serve ...`)."""
    app = _typer(add_completion=False)
    app.callback()(lambda: None)
    app.command(LIGHT)(serve_cmd)
    return app


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # `from serving.cli import app`: every command
        return full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _user_error(exc: BaseException) -> bool:
    """A user's mistake: DataError, or the model library's ModelInputError (looked up only if
    that library was imported: nothing else can have raised it)."""
    models = sys.modules.get("training.models.errors")
    return isinstance(exc, DataError) or (
        models is not None and isinstance(exc, models.ModelInputError))


def main() -> None:
    """Run the CLI; a user's mistake (DataError) prints one line and exits 2, no traceback."""
    app = serve_app() if sys.argv[1:2] == [LIGHT] else full_app()
    try:
        app(standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here with standalone_mode=False
        if _user_error(exc):
            Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False,
                                       soft_wrap=True)
            sys.exit(2)
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click's, or typer's copy
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
