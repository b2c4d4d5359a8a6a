"""The look every page of the app shares: one stylesheet, allowed by its hash, and nothing else.

The Content-Security-Policy stays `default-src 'none'`: the only thing a page may load is the inline
stylesheet below, named by its SHA-256 in `style-src` (no `unsafe-inline`, no scripts, no forms, no frames).
Pages are built from escaped text only; readable on a phone (viewport meta, one column under 40rem).
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable

import azure.functions as func

APP_NAME = "Virtual appointment join links"

STYLESHEET = """
:root{--ink:#1b1a19;--muted:#605e5c;--line:#e1dfdd;--accent:#4f52b2;--ok:#107c10;--warn:#8a5300;--bad:#a4262c;
--page:#faf9f8;--card:#fff}
*{box-sizing:border-box}
body{margin:0;background:var(--page);color:var(--ink);font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif}
header{background:var(--accent);color:#fff;padding:.75rem 1rem}
header p{margin:0;font-weight:600;letter-spacing:.01em}
main{max-width:64rem;margin:0 auto;padding:1.25rem 1rem 3rem}
h1{font-size:1.6rem;line-height:1.25;margin:.25rem 0 1rem}
h2{font-size:1.15rem;margin:2rem 0 .5rem}
p{margin:.5rem 0}
a{color:var(--accent)}
.card{background:var(--card);border:1px solid var(--line);border-radius:.5rem;padding:1rem 1.25rem;margin:1rem 0}
.card.ok{border-left:.4rem solid var(--ok)}
.card.warn{border-left:.4rem solid var(--warn)}
.card.bad{border-left:.4rem solid var(--bad)}
.button{display:inline-block;background:var(--accent);color:#fff;text-decoration:none;border-radius:.35rem;
padding:.45rem .9rem;font-weight:600;margin:.25rem .5rem .25rem 0}
.button.quiet{background:transparent;color:var(--accent);border:1px solid var(--accent)}
.muted{color:var(--muted);font-size:.9rem}
.status{display:inline-block;border-radius:1rem;padding:.05rem .6rem;font-size:.85rem;font-weight:600;
white-space:nowrap}
.status.connected{background:#dff6dd;color:var(--ok)}
.status.needs_reconnect{background:#fff4ce;color:var(--warn)}
.status.revoked{background:#fde7e9;color:var(--bad)}
.summary{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;margin:.5rem 0 1rem}
.summary strong{font-size:1.4rem;display:block}
table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:.5rem}
th,td{text-align:left;padding:.55rem .7rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.85rem;color:var(--muted);font-weight:600}
code{font-family:ui-monospace,"Cascadia Mono",Consolas,monospace;font-size:.85em;word-break:break-all}
@media (max-width:40rem){
 table,thead,tbody,tr,th,td{display:block}
 thead{display:none}
 tr{border-bottom:1px solid var(--line);padding:.5rem 0}
 td{border:0;padding:.2rem .7rem}
 td[data-label]::before{content:attr(data-label) ": ";color:var(--muted);font-size:.85rem}
}
"""
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLESHEET.encode()).digest()).decode()
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Security-Policy": (f"default-src 'none'; style-src '{STYLE_HASH}'; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # The callback's URL carries the authorization code: it must never travel on as a Referer.
    "Referrer-Policy": "no-referrer",
}


def esc(text: object) -> str:
    """Text made safe for HTML (attributes included)."""
    return html.escape(str(text), quote=True)


def html_page(status: int, title: str, body: str, *, headers: dict[str, str] | None = None) -> func.HttpResponse:
    """A page in the app's look. `body` must be built from values escaped with esc()."""
    document = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{esc(title)} – {esc(APP_NAME)}</title><style>{STYLESHEET}</style></head>"
                f"<body><header><p>{esc(APP_NAME)}</p></header><main>{body}</main></body></html>")
    return func.HttpResponse(document, status_code=status, mimetype="text/html", charset="utf-8",
                             headers={**PAGE_HEADERS, **(headers or {})})


def message_page(status: int, title: str, message: str, *, tone: str | None = None,
                 notes: Iterable[str] = (), headers: dict[str, str] | None = None) -> func.HttpResponse:
    """A page that tells a person one thing (a connect or consent result); every piece of text is escaped."""
    tone = tone or ("ok" if status < 300 else "bad" if status >= 500 or status == 403 else "warn")
    extra = "".join(f"<p class=\"muted\">{esc(note)}</p>" for note in notes)
    body = f"<h1>{esc(title)}</h1><div class=\"card {esc(tone)}\" id=\"message\"><p>{esc(message)}</p>{extra}</div>"
    return html_page(status, title, body, headers=headers)
