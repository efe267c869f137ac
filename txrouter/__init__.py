"""
txrouter: several Python web apps behind one port, in one Twisted process tree.

C{twistd txrouter --config routes.yaml} reads a routes file (see
L{txrouter.config}), builds one resource tree (L{txrouter.router}) and serves
it on every C{listen} endpoint (L{txrouter.tap}).
"""

__version__ = "0.1.0"
