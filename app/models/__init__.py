"""Every table, imported from one place so Alembic and the domains see the same metadata."""

from app.models.auth import ROLES, ApiToken, AuditEntry
from app.models.base import Base
from app.models.budgets import Budget
from app.models.fleet import Cluster, Gpu, GpuPlacement, Node
from app.models.jobs import Job
from app.models.periods import Period, PeriodLine
from app.models.pricing import EnergyRate, Rate
from app.models.retention import PruneMark
from app.models.scenarios import Scenario, ScenarioPrice
from app.models.usage import (
    GPU_HOURS,
    GPU_OCCUPANCY,
    USAGE,
    DailyUsage,
    HourlyUsage,
    ModelHourlyUsage,
    MonthlyUsage,
    Report,
)

__all__ = [
    "GPU_HOURS",
    "GPU_OCCUPANCY",
    "ROLES",
    "USAGE",
    "ApiToken",
    "AuditEntry",
    "Base",
    "Budget",
    "Cluster",
    "DailyUsage",
    "EnergyRate",
    "Gpu",
    "GpuPlacement",
    "HourlyUsage",
    "Job",
    "ModelHourlyUsage",
    "MonthlyUsage",
    "Node",
    "Period",
    "PeriodLine",
    "PruneMark",
    "Rate",
    "Report",
    "Scenario",
    "ScenarioPrice",
]
