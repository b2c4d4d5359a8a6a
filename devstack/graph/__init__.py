"""Microsoft Graph v1.0 emulator for the online-meeting endpoints the product uses.

Modules: `app` (create_graph_app), `emulator` (meetings, token verification, fault rules, counters),
`dispatch` (what every Graph request goes through), `routing` (paths to Routes), `endpoints` (the
endpoints and ROUTES, their table: a new endpoint goes there), `faults` and `admin`; calendar events in
`calendar`/`calendar_admin`, their change-notification subscriptions in `subscriptions` (hub and delivery),
`subscription_endpoints` and `subscriptions_admin`.
"""

from devstack.graph.app import create_graph_app
from devstack.graph.emulator import GRAPH_KEY, GraphEmulator

__all__ = ["GRAPH_KEY", "GraphEmulator", "create_graph_app"]
