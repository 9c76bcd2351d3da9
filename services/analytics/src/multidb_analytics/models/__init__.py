"""The analytics role's models."""

from multidb_analytics.models.base import AnalyticsBase
from multidb_analytics.models.events import AnalyticsEvent, SystemMetrics, UserActivity

__all__ = ["AnalyticsBase", "AnalyticsEvent", "SystemMetrics", "UserActivity"]
