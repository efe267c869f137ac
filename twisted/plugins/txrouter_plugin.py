"""twistd plugin: C{twistd txrouter --config routes.yaml}."""

from twisted.application.service import ServiceMaker

txrouter = ServiceMaker(
    "txrouter",
    "txrouter.tap",
    "Serve Django projects, WSGI apps, static files and upstreams on one port.",
    "txrouter",
)
