"""Evaluation: the forget monitor, collateral change, membership and memorisation measures, FID, histograms."""

from genunlearn.eval.collateral import CollateralChange
from genunlearn.eval.monitor import ForgetMonitor, MonitorReading, wilson_interval

__all__ = ["CollateralChange", "ForgetMonitor", "MonitorReading", "wilson_interval"]
