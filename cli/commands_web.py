"""``tidings open``: the local web page of the running node, through a one-time login link."""

from __future__ import annotations

import click

from .common import CliError, Session, common_options, emit, json_option, pass_session

__all__ = ["COMMANDS"]


def web_url(session: Session) -> str:
    """The running node's web address from its ``node.json`` (CliError if there is none)."""
    home = session.home
    info = home.running_node()
    if info is None:
        raise CliError(f"no node is running on {home.path}: start it with 'tidings run'", code="not_running")
    web = (info.get("services") or {}).get("web")
    if not isinstance(web, dict):
        raise CliError("the running node serves no web page: restart it without '--http off'", code="no_web")
    if web.get("state") == "crashed":
        # e.g. its address is taken: the error names it and the --http options (node/web/service.py)
        raise CliError(
            f"the node running on {home.path} serves no web page: {web.get('error')}", code="web_crashed"
        )
    url = web.get("url")
    if not isinstance(url, str) or not url.startswith("http"):
        raise CliError("the node's web page is still starting; try again in a moment", code="web_starting")
    return url


@click.command("open")
@click.option("--print", "print_only", is_flag=True, help="Only print the link, do not open a browser.")
@common_options
@json_option
@pass_session
def open_(session: Session, print_only: bool, as_json: bool) -> None:
    """Open the local web page in your browser (logged in by a one-time link valid for 2 minutes)."""
    from tidings.node.web.auth import CODE_SECONDS, new_login_code

    url = web_url(session)
    link = f"{url}/login?code={new_login_code(session.home.path)}"
    if as_json:
        emit({"url": url, "login": link, "expires_in": CODE_SECONDS})
        if print_only:
            return
    elif print_only:
        click.echo(link)
        return
    import webbrowser

    if not webbrowser.open(link):
        click.echo(
            f"could not start a browser; open this link (valid once, for {CODE_SECONDS:.0f} s):", err=True
        )
        click.echo(link)
    elif not as_json:
        click.echo(f"opened {url} in your browser")


COMMANDS: list[click.Command] = [open_]
