"""The `archip` command line and the control-plane plugin host.

May import everything in archipelago and pithos_gw; nothing imports control.
"""
