"""The page's HTML: the shell, its script, and the summary fragment, rendered on the server
with every value escaped (Jinja2's autoescape)."""

from functools import cache
from importlib.resources import files
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape

from app.ui.service import Summary

_templates = Environment(
    loader=PackageLoader("app.ui", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


@cache
def asset(name: str) -> str:
    """A file served as it is shipped (the shell and its script hold no data)."""
    return files("app.ui").joinpath("templates").joinpath(name).read_text(encoding="utf-8")


def summary_html(summary: Summary, *, exports: dict[str, str]) -> str:
    """The summary fragment; `exports` maps each export's file type to its path, which the
    fragment links to relative to the page (so that a prefix the service is served under
    stays on the links)."""
    window = {
        "from": f"{summary.start:%Y-%m-%dT%H:%M:%SZ}",
        "to": f"{summary.end:%Y-%m-%dT%H:%M:%SZ}",
    }
    links = {kind: f"{path.lstrip('/')}?{urlencode(window)}" for kind, path in exports.items()}
    return _templates.get_template("summary.html").render(summary=summary, links=links)
