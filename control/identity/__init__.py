"""The identity plugin (Astakos): users, tokens, providers, projects, quotas and commissions;
Keystone v2 tokens at /identity/v2.0, the account API at /account/v1.0, `archip user|project|quota`.

May import archipelago, pithos_gw (the hooks it implements) and control.host; no other plugin.
"""
