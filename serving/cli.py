"""The `retention` command: one entry point, sub-commands grown by each layer."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from features.cli import data_app, demo_data_cmd, features_app
from features.errors import DataError
from serving.commands import campaign_log_app, publish_cmd, score_cmd, serve_cmd
from serving.console.report import report_cmd
from serving.console.users import console_app
from training.cli import models_app, train_app
from training.models.errors import ModelInputError

app = typer.Typer(
    help="Churn and targeting service: data, features, train, models, score, serve, report, "
         "console, campaign-log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
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


def main() -> None:
    """Run the CLI; a user's mistake (DataError) prints one line and exits 2, no traceback."""
    try:
        app(standalone_mode=False)
    except (DataError, ModelInputError) as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here with standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
