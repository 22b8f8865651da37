"""Evaluation: the forget monitor, FID from classifier features, histograms."""

from genunlearn.eval.monitor import ForgetMonitor, MonitorReading, wilson_interval

__all__ = ["ForgetMonitor", "MonitorReading", "wilson_interval"]
