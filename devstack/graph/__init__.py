"""Microsoft Graph v1.0 emulator for the online-meeting endpoints the product uses.

Modules: `app` (create_graph_app), `emulator` (meetings, token verification, fault rules, counters),
`dispatch` (every Graph request and its endpoints), `faults` and `admin`.
"""

from devstack.graph.app import create_graph_app
from devstack.graph.emulator import GRAPH_KEY, GraphEmulator

__all__ = ["GRAPH_KEY", "GraphEmulator", "create_graph_app"]
