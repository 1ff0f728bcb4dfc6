"""Managed backends: replicas the gateway starts, sleeps, wakes and stops (see docs/lifecycle.md).

Kept import-light: :mod:`frugalserve.config` imports :mod:`frugalserve.lifecycle.config`.
"""
