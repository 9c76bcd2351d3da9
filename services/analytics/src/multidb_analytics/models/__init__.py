"""The analytics role's models."""

from multidb_analytics.models.base import AnalyticsBase
from multidb_analytics.models.events import AnalyticsEvent, SystemMetrics, UserActivity
from multidb_analytics.models.rollups import AnalyticsEventRollup
from multidb_analytics.models.stats import StatsSample

__all__ = [
    "AnalyticsBase",
    "AnalyticsEvent",
    "AnalyticsEventRollup",
    "StatsSample",
    "SystemMetrics",
    "UserActivity",
]
