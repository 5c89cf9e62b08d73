"""Every admin route controller, for ``create_admin_app``."""

from gateway.admin.catalog import AdapterRoutes, PoolRoutes
from gateway.admin.reports import AuditRoutes, UsageRoutes
from gateway.admin.routes import KeyRoutes, MappingRoutes, TeamRoutes

ROUTES = [TeamRoutes, KeyRoutes, MappingRoutes, PoolRoutes, AdapterRoutes, AuditRoutes, UsageRoutes]
