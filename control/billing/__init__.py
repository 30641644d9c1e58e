"""Billing (Aquarium): usage events become credits.

The engine (resources, units, prices, periods, events, ledger, bill) is pure Python over
the standard library and archipelago.errors; the plugin modules (tables, service, api,
cli, chart, plugin) put it on the control-plane host. Nothing outside control imports it.
"""
