"""Console users from the command line: `retention console add-user` (or
`python -m serving.console.users add-user`) writes a user with an argon2 hash into the users
file; `hash` prints a hash for $RETENTION_CONSOLE_PASSWORD_HASH."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from serving.console.auth import add_user, hash_password

console_app = typer.Typer(help="Console users (sign-in for the pages under /console).",
                          no_args_is_help=True)


def _password(stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@console_app.command("add-user")
def add_user_cmd(
    username: Annotated[str, typer.Argument(help="User name (letters, digits, _ . @ -).")],
    users: Annotated[Path, typer.Option(help="Users file (created if missing).")
                     ] = Path("console_users.yaml"),
    password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input "
                                                      "instead of prompting.")] = False,
) -> None:
    """Add a console user (or change their password) in the users file."""
    password = _password(password_stdin)
    if len(password) < 8:
        raise typer.BadParameter("use at least 8 characters", param_hint="password")
    add_user(users, username, password)
    typer.echo(f"{username} can sign in ({users})")


@console_app.command("hash")
def hash_cmd(
    password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input "
                                                      "instead of prompting.")] = False,
) -> None:
    """Print an argon2 hash of a password (for $RETENTION_CONSOLE_PASSWORD_HASH)."""
    typer.echo(hash_password(_password(password_stdin)))


if __name__ == "__main__":
    console_app()
