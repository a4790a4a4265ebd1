"""The page at `/`: a shell that asks once for a viewer token, and the summary it shows.

The shell and its script are served to anyone: they hold no data. The summary is a fragment
of HTML under `/v1/`, so that `auth.Authenticate` settles its token as it does every API
read's (outside `/v1/` nothing is authenticated). It is no part of the API document.
"""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.core.auth import ViewerAuth
from app.core.clock import ClockDep
from app.core.db import ReadSession, SettingsDep
from app.core.units import micro_from_usd
from app.ui._render import asset, summary_html
from app.ui.service import read_summary

router = APIRouter(include_in_schema=False)

# The page loads nothing from another host, runs only its own script (an injected one, were
# escaping ever to fail, would not run) and may be framed by no one.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
# The export each link downloads, by the name of its route (app.exports.router).
EXPORT_ROUTES = {
    "focus.csv": "get_focus",
    "focus.parquet": "get_focus_parquet",
    "costs.csv": "get_costs_csv",
}


@router.get("/", response_class=HTMLResponse)
async def get_page() -> HTMLResponse:
    return HTMLResponse(asset("page.html"), headers=PAGE_HEADERS)


@router.get("/ui/page.js")
async def get_page_script() -> Response:
    return Response(
        asset("page.js"),
        media_type="text/javascript; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


@router.get("/v1/ui/summary", response_class=HTMLResponse)
def get_summary(
    request: Request,
    _: ViewerAuth,
    session: ReadSession,
    settings: SettingsDep,
    clock: ClockDep,
) -> HTMLResponse:
    """Each model's training-cost table, this UTC month by team and model, its idle share
    and its exports, as HTML for the page."""
    summary = read_summary(
        session, now=clock(), default_micro_usd=micro_from_usd(settings.default_rate_usd)
    )
    exports = {kind: request.app.url_path_for(name) for kind, name in EXPORT_ROUTES.items()}
    return HTMLResponse(
        summary_html(summary, exports=exports),
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )
