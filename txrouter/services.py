"""
The services of a router (and of a worker process, which has the same
shape): L{RouterService}, the parent whose children stop one at a time in
reverse order, L{ListenerService}, L{DrainService} and
L{RuntimeDirService}. Each acquires what it holds in C{startService} and
lets it go in C{stopService}.

How they are put together for a routes file is L{txrouter.assembly}'s
business; a worker process imports this module, never that one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from txrouter.certificates import CertificateStore
from txrouter.errors import ListenError
from txrouter.openfiles import raise_open_files_limit
from txrouter.privatetwisted import eager_writes, keep_socket_files
from txrouter.privileges import drop_target, give_to_runner
from txrouter.proxyprotocol import LiveTrustedProxies, proxy_header_from_network
from txrouter.site import ListenerFactory, RouterSite

if TYPE_CHECKING:
    from txrouter.acmeservice import AcmeService
    from txrouter.health import RouterHealth
    from txrouter.listeners import Listener
    from txrouter.reloader import Reloader
    from txrouter.routetable import RouteTable

__all__ = [
    "DrainService",
    "ListenerService",
    "RouterService",
    "RuntimeDirService",
    "StopDeadline",
]

_log = Logger()


class RouterService(MultiService):
    """
    A C{MultiService} whose children stop one after the other, last added
    first; with a L{health}, only once it has been told the router stops
    and its stop delay is over (the ports stay open meanwhile), and after
    an upgrade's hand-over, the listeners first.

    @ivar site: the one site of every listener, once assembled.
    @ivar table: the route table the site serves (L{serve}).
    @ivar reloader: what changes the table while the router runs.
    @ivar health: what its health checks read: told the table it serves,
        and when it begins to stop.
    @ivar handed_over: an upgrade has given every listening socket to a
        new router.
    @ivar acme: what obtains the certificates of C{acme:}, which its TLS
        listeners serve beside their own.
    """

    site: RouterSite | None = None
    table: RouteTable | None = None
    reloader: Reloader | None = None
    health: RouterHealth | None = None
    acme: AcmeService | None = None
    handed_over = False
    #: When set, the whole stop must be over by then, every stage included
    #: (see L{StopDeadline}).
    deadline: StopDeadline | None = None

    def serve(self, table: RouteTable) -> None:
        """
        Make C{table} the one the site serves, from the next request on;
        its workers and upstreams take over the counters of those they
        replace (L{RouteTable.carry_counters}).
        """
        assert self.site is not None
        if self.table is not None and self.table is not table:
            table.carry_counters(self.table)
        self.table = table
        self.site.resource = table.router
        if self.health is not None:
            self.health.table = table

    def privilegedStartService(self) -> None:
        raised = raise_open_files_limit()
        if raised is not None:
            _log.info(
                "open files limit raised from {old} to {new}",
                old=raised[0],
                new=raised[1],
            )
        super().privilegedStartService()

    def startService(self) -> None:
        if self.health is not None:
            self.health.start()
        super().startService()

    @inlineCallbacks
    def stopService(self) -> Any:
        Service.stopService(self)
        if self.health is not None:
            # Not ready from now on; the ports stay open for the stop delay.
            yield self.health.stop(self.handed_over)
        if self.deadline is not None:
            self.deadline.start()
        children = list(reversed(list(self)))
        if self.handed_over:
            # Every socket is the new router's now, the admin endpoint's
            # too: none is ours to keep open while we drain.
            listeners = [c for c in children if isinstance(c, ListenerService)]
            children = listeners + [c for c in children if c not in listeners]
        for child in children:
            yield maybeDeferred(child.stopService)


class StopDeadline:
    """
    The time by which a stopping router must be gone: C{drain_timeout}
    after the stop began (after the stop delay of its health routes, if
    any: while the ports are open, requests keep coming). The drain waits
    at most until then; the stages after it (worker processes, the thread
    pool) get what is left plus a small margin, rather than a full wait
    each.
    """

    #: Seconds the stages after the drain may run past the deadline.
    margin = 1.0

    def __init__(self, clock: Any, drain_timeout: float) -> None:
        self._clock = clock
        self.drain_timeout = drain_timeout
        self._at: float | None = None

    def start(self) -> None:
        self._at = self._clock.seconds() + self.drain_timeout

    def left(self, margin: float = 0.0) -> float:
        """
        Seconds until the deadline plus C{margin} (C{drain_timeout} plus
        C{margin} before the stop begins).
        """
        if self._at is None:
            return self.drain_timeout + margin
        now: float = self._clock.seconds()
        return max(0.0, self._at + margin - now)

    def left_with_margin(self) -> float:
        """
        L{left} plus L{margin}: one margin for all the stages after the
        drain together, not one each.
        """
        return self.left(self.margin)


class ListenerService(StreamServerEndpointService):
    """
    Listen on one endpoint; fail the start, with a short message, when it
    cannot be bound. A L{RouterSite} is reached through a
    L{txrouter.site.ListenerFactory} of this listener's own, which counts
    its connections apart from the other listeners'.
    """

    def __init__(
        self, description: str, endpoint: Any, site: Any, spec: Listener | None = None
    ) -> None:
        """
        @param spec: the C{listen:} entry, when it adds TLS or redirects
            to HTTPS.
        """
        factory = site
        tls = spec.tls if spec is not None else None
        self._listener: ListenerFactory | None = None
        if isinstance(site, RouterSite):
            factory = self._listener = site.listener(
                description,
                tls=tls is not None,
                https_redirect=spec.https_redirect if spec is not None else None,
                http2=tls is not None and tls.http2,
            )
        #: The certificates of a TLS listener, which a reload may replace.
        self.certificates: CertificateStore | None = None
        if tls is not None:
            self.certificates = CertificateStore(
                tls.certificates, tls.default, tls.acme
            )
            factory = TLSMemoryBIOFactory(self.certificates, False, factory)
        super().__init__(_Remembering(endpoint, self), factory)
        self.setName(description)
        # Raise from privilegedStartService rather than log and serve nothing.
        self._raiseSynchronously = True

    #: The listening port, once listening.
    port: Any = None

    def update(self, spec: Listener) -> None:
        """
        Take on a reload's C{listen:} entry for this endpoint: its
        certificates and HTTP/2 for the handshakes that follow, its HTTPS
        redirect for the requests that follow (adding or removing TLS needs
        a new port).
        """
        if self.certificates is not None and spec.tls is not None:
            self.certificates.acme = spec.tls.acme
            self.certificates.replace(spec.tls.certificates, spec.tls.default)
            self._follow_acme()
        if self._listener is not None:
            self._listener.https_redirect = spec.https_redirect
            self._listener.http2 = spec.tls is not None and spec.tls.http2

    def startService(self) -> None:
        super().startService()
        self._follow_acme()
        store = self.certificates
        if store is not None and store.placeholder:
            _log.info(
                "{listener}: no certificate yet: serving a self-signed one "
                "until the ACME CA issues the first",
                listener=self.name,
            )

    def _follow_acme(self) -> None:
        """
        Serve the certificates of the router's ACME service, when this
        listener's C{tls:} takes them; stop when it no longer does.
        """
        acme = getattr(self.parent, "acme", None)
        store = self.certificates
        if acme is None or store is None or not self.running:
            return
        if store.acme:
            acme.serve_on(store)
        else:
            acme.forget(store)

    def stopService(self) -> Deferred[None]:
        acme = getattr(self.parent, "acme", None)
        if acme is not None and self.certificates is not None:
            acme.forget(self.certificates)
        if self.port is not None:
            _leave_unremovable_file(self.port)
        return super().stopService()  # type: ignore[no-any-return]

    def privilegedStartService(self) -> None:
        listener = self._listener
        if listener is not None and proxy_header_from_network(str(self.name)):
            # Before the port listens: no connection without the check.
            parent = self.parent
            listener.proxy_peers = (
                LiveTrustedProxies(parent)
                if isinstance(parent, RouterService)
                else None  # a listener alone, as tests make: no routes file
            )
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or e.socketError
            raise ListenError(f"{reason}: {self.name}") from None


def _leave_unremovable_file(port: Any) -> None:
    """
    If C{port} is a UNIX socket whose file this process cannot remove (root
    made it in a folder of root's before C{twistd} dropped root), leave it
    when the port closes rather than fail the stop: the next start, as
    root, replaces it.
    """
    if not getattr(port, "connected", False):
        return  # closed already (a listener a reload removed is stopped twice)
    path = getattr(port.getHost(), "name", None)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str) or not path or path.startswith("\0"):
        return
    folder = os.path.dirname(path)
    if not os.access(folder, os.W_OK | os.X_OK):
        _log.info(
            "leaving {path} in place: this user cannot remove it from {folder} "
            "(root made it before the privilege drop); the next start replaces it",
            path=path,
            folder=folder,
        )
        keep_socket_files(port)


@implementer(IStreamServerEndpoint)
class _Remembering:
    """
    An endpoint that tells its listener service the port it listens on.
    """

    def __init__(self, endpoint: Any, service: ListenerService) -> None:
        self._endpoint = endpoint
        self._service = service

    def listen(self, factory: Any) -> Deferred[Any]:
        def keep(port: Any) -> Any:
            self._service.port = port
            eager_writes(port)
            if isinstance(factory, ListenerFactory):
                factory.port = port
            return port

        d: Deferred[Any] = self._endpoint.listen(factory)
        return d.addCallback(keep)


class DrainService(Service):
    """
    On stop, wait for the site's requests in flight (at most C{timeout}).
    """

    def __init__(
        self, site: RouterSite, timeout: float, deadline: StopDeadline | None = None
    ) -> None:
        self._site = site
        self.timeout = timeout
        self._deadline = deadline

    def stopService(self) -> Deferred[None]:
        super().stopService()
        timeout = self.timeout if self._deadline is None else self._deadline.left()
        return self._site.drain(timeout)


class RuntimeDirService(Service):
    """
    The private folder of worker sockets: made (mode 0700) when the service
    starts, cleared of this router's sockets when the workers have stopped,
    and removed if it was a temporary one.

    @ivar temporary: the folder is ours alone: it must not exist yet (a
        folder someone made in its place is refused), and goes at stop.
    @ivar instance: the mark of this router's sockets (another router,
        the one an upgrade started, may share the folder).
    """

    def __init__(self, path: str, temporary: bool, instance: str = "") -> None:
        self.path = path
        self._temporary = temporary
        self._instance = instance
        self._made = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if drop_target() is not None:
            # twistd drops root next: make the folder now, where root may
            # write, and make it over to the user the workers run as.
            self._make()
            give_to_runner(self.path)

    def startService(self) -> None:
        if not self._made:
            self._make()
        super().startService()

    def _make(self) -> None:
        if self._temporary:
            os.mkdir(self.path, 0o700)
        else:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            os.chmod(self.path, 0o700)
        self._made = True

    def stopService(self) -> None:
        super().stopService()
        for name in os.listdir(self.path):
            if name.endswith(".sock") and f"-{self._instance}-" in name:
                os.unlink(os.path.join(self.path, name))
        if self._temporary:
            os.rmdir(self.path)
