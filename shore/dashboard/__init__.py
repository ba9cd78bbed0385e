"""The operator dashboard: a server-rendered web page for the relay's operators.

:func:`create_app` builds the Starlette app over an open store; ``vessel-relay shore
dashboard`` serves it. See :mod:`shore.dashboard.app`.
"""

from shore.dashboard.app import DashboardSettings, create_app

__all__ = ["DashboardSettings", "create_app"]
