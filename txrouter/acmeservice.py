"""
L{AcmeService}: obtains and renews the certificates of C{acme:} while the
router runs, and hands them to its TLS listeners.

At start it reads the stored certificates (a restart serves them at once
and orders nothing), then orders those missing. One timer wakes it at the
earliest renewal or retry time (and at least every
L{txrouter.acmeschedule.CHECK_EVERY}). An order for a name:

    thread:   place the order (account first, if need be)   AcmeClient.order
    reactor:  the site answers its HTTP-01 tokens           site.acme_challenges
    thread:   tell the CA; wait until it has issued          AcmeClient.finish
    thread:   store key + chain (0600)                       AcmeStorage.save
    reactor:  every TLS listener serves it (next handshake)  CertificateStore

The blocking steps run in a thread pool of its own (one thread: orders
queue, and a slow CA never takes the applications' threads); reactor state
is touched only in the reactor thread, between the steps. A failure keeps
the certificate being served, logs why, and tries again after a back-off
(L{txrouter.acmeschedule.backoff}); one order per name at a time.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from txrouter.acmeclient import AcmeClient, Order, describe_failure
from txrouter.acmeconfig import Acme
from txrouter.acmeschedule import DAY, backoff, next_wakeup, renewal_time
from txrouter.acmestorage import AcmeStorage
from txrouter.certificates import Certificate, CertificateStore
from txrouter.site import RouterSite
from txrouter.threadpool import ThreadPoolService, make_pool

__all__ = ["AcmeService"]

_log = Logger()
_T = TypeVar("_T")


def _when(seconds: float) -> str:
    return (
        datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        .replace(microsecond=0)
        .isoformat()
    )


def _delay(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class AcmeService(Service):
    """
    Certificates from an ACME CA for C{config.names}.

    @ivar issued: the certificate served for each name.
    @ivar challenges: the key authorization of each HTTP-01 token being
        checked (the site's C{acme_challenges}).
    """

    def __init__(
        self,
        config: Acme,
        reactor: Any,
        site: RouterSite,
        client: AcmeClient | None = None,
    ) -> None:
        """
        @param client: what speaks ACME (by default one for C{config}).
        """
        self.config = config
        self._reactor = reactor
        self._site = site
        self.storage = AcmeStorage(config.storage)
        self._client = client or AcmeClient(config, self.storage)
        self._pool = make_pool(0, 1, "txrouter-acme")
        self._threads = ThreadPoolService(self._pool, reactor, grace=2.0)
        self.issued: dict[str, Certificate] = {}
        self.challenges: dict[bytes, bytes] = {}
        self._stores: set[CertificateStore] = set()
        self._due: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._busy: set[str] = set()
        self._timer: IDelayedCall | None = None

    # -- the listeners

    def serve_on(self, store: CertificateStore) -> None:
        """
        Serve the issued certificates on C{store}'s listener, now and as
        they are renewed.
        """
        self._stores.add(store)
        store.serve_issued(self._served())

    def forget(self, store: CertificateStore) -> None:
        """
        Stop updating C{store} (its listener closes, or no longer wants
        them).
        """
        self._stores.discard(store)

    def _served(self) -> list[Certificate]:
        # In the order of names: the first is an acme-only listener's default.
        return [self.issued[n] for n in self.config.names if n in self.issued]

    def _publish(self) -> None:
        served = self._served()
        for store in self._stores:
            store.serve_issued(served)

    # -- start and stop

    def startService(self) -> None:
        super().startService()
        self._threads.startService()
        self._site.acme_challenges = self.challenges
        for warning in self.config.warnings:
            _log.warn("{warning}", warning=warning)
        now = self._reactor.seconds()
        try:
            self.storage.prepare()
            stored, problems = self.storage.load(self.config.names)
        except OSError as e:
            _log.error(
                "acme: cannot use the storage folder {folder}: {reason}",
                folder=str(self.storage.folder),
                reason=e.strerror or e,
            )
            stored, problems = {}, []
        for problem in problems:
            _log.warn("acme: a stored certificate is not used: {why}", why=problem)
        for name in self.config.names:
            certificate = stored.get(name)
            if certificate is None:
                _log.info(
                    "acme: {name}: no stored certificate; ordering one from "
                    "{directory}",
                    name=name,
                    directory=self.config.directory,
                )
                self._due[name] = now
                continue
            self.issued[name] = certificate
            self._due[name] = self._renewal(certificate)
            _log.info(
                "acme: {name}: serving the stored certificate {source}, valid "
                "until {until}; renewal from {renewal}",
                name=name,
                source=certificate.source,
                until=certificate.not_after.isoformat(),
                renewal=_when(self._due[name]),
            )
        self._publish()
        self._plan()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._site.acme_challenges = None
        self.challenges.clear()
        # An order in flight is left to its thread (a daemon): nothing of
        # it reaches the reactor once stopped.
        return self._threads.stopService()

    # -- the schedule

    def _renewal(self, certificate: Certificate) -> float:
        not_after = certificate.not_after.timestamp()
        not_before = (
            certificate.not_before.timestamp()
            if certificate.not_before is not None
            else not_after - 90 * DAY
        )
        return renewal_time(not_before, not_after, self.config.renew_before * DAY)

    def _plan(self) -> None:
        """
        Set the one timer at the next name's renewal or retry.
        """
        if not self.running:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        waiting = [due for name, due in self._due.items() if name not in self._busy]
        delay = next_wakeup(self._reactor.seconds(), waiting)
        self._timer = self._reactor.callLater(delay, self._wake)

    def _wake(self) -> None:
        self._timer = None
        now = self._reactor.seconds()
        for name in self.config.names:
            if name not in self._busy and self._due.get(name, now) <= now:
                self._obtain(name)
        self._plan()

    # -- one order

    def _in_thread(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    @inlineCallbacks
    def _obtain(self, name: str) -> Generator[Deferred[Any], Any, None]:
        """
        Order, check and store a certificate for C{name}, and serve it; on
        failure keep the one served and schedule a retry.
        """
        self._busy.add(name)
        what = "renewal" if name in self.issued else "first certificate"
        order: Order | None = None
        try:
            order = yield self._in_thread(self._client.order, name)
            if not self.running:
                return
            self.challenges.update(order.answers)
            chain = yield self._in_thread(self._client.finish, order)
            certificate = yield self._in_thread(
                self.storage.save, name, order.key_pem, chain
            )
        except Exception as e:
            if self.running:
                self._failed(name, what, describe_failure(e))
        else:
            if self.running:
                self._succeeded(name, what, certificate)
        finally:
            if order is not None:
                for token in order.answers:
                    self.challenges.pop(token, None)
            self._busy.discard(name)
            self._plan()

    def _succeeded(self, name: str, what: str, certificate: Certificate) -> None:
        self._failures.pop(name, None)
        self.issued[name] = certificate
        self._due[name] = self._renewal(certificate)
        self._publish()
        _log.info(
            "acme: {name}: {what} issued by {directory}, valid until {until}, "
            "stored in {source}; renewal from {renewal}",
            name=name,
            what=what,
            directory=self.config.directory,
            until=certificate.not_after.isoformat(),
            source=certificate.source,
            renewal=_when(self._due[name]),
        )

    def _failed(self, name: str, what: str, reason: str) -> None:
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        delay = backoff(failures)
        self._due[name] = self._reactor.seconds() + delay
        current = self.issued.get(name)
        keeping = (
            f"still serving the certificate valid until {current.not_after.isoformat()}"
            if current is not None
            else "no certificate for it yet"
        )
        _log.warn(
            "acme: {name}: {what} failed: {reason}; {keeping}; next try in "
            "{delay} (failure {failures} in a row)",
            name=name,
            what=what,
            reason=reason,
            keeping=keeping,
            delay=_delay(delay),
            failures=failures,
        )
