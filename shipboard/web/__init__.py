"""The crew web page: server-rendered pages over :mod:`shipboard.intake` (see ``pages``)."""

from __future__ import annotations

from shipboard.web.pages import web_routes

__all__ = ["web_routes"]
