"""The union's own application: keys, local case store, relay client, CLI and web inbox.

It runs on the union's machine with the union's private keys (``vessel-relay union
init``), fetches sealed reports from the relay's union API, opens them locally into the
union's own SQLite database, and sends back case notes sealed to each reporter.
"""
