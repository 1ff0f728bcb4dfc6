"""Accounting: usage records, replica events, API keys, budgets, GPU cost attribution and reports.

Import what you need from the submodules; this package module stays empty because
:mod:`frugalserve.config` imports :mod:`frugalserve.accounting.config` for every command.
"""
