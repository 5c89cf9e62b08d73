"""Every admin route controller, for ``create_admin_app``."""

from gateway.admin.history import AuditRoutes, UsageRoutes
from gateway.admin.serving import AdapterRoutes, PoolRoutes
from gateway.admin.teams import KeyRoutes, MappingRoutes, TeamRoutes

ROUTES = [TeamRoutes, KeyRoutes, MappingRoutes, PoolRoutes, AdapterRoutes, AuditRoutes, UsageRoutes]
