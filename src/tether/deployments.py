"""Prefect's ``prefect.deployments`` path: deployments and the schedule classes scripts import from it.

``flow.to_deployment(...)`` returns a `Deployment` (Prefect's ``RunnerDeployment``);
``serve(*deployments)`` serves them, as ``tether.serve`` does.
"""

from tether._deployment import Deployment, DeploymentError, RunnerDeployment
from tether._serve import serve
from tether.schedules import Cron, CronSchedule, Interval, IntervalSchedule, RRule, RRuleSchedule

__all__ = [
    "Cron",
    "CronSchedule",
    "Deployment",
    "DeploymentError",
    "Interval",
    "IntervalSchedule",
    "RRule",
    "RRuleSchedule",
    "RunnerDeployment",
    "serve",
]
