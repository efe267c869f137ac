"""
The ACME protocol (RFC 8555), spoken by certbot's C{acme} package: an
account, an order for one name, its HTTP-01 challenge and the certificate.

Every call blocks (the package uses C{requests}): L{AcmeClient} runs in
the ACME service's own thread, never in the reactor's, and touches no
reactor state. One order is split in two so that the reactor, in between,
can start answering the challenge:

    client = AcmeClient(config, storage)
    order = client.order("example.com")     # -> the tokens to answer
    ...                                     # the site answers order.answers
    chain = client.finish(order)            # -> the PEM chain, once issued
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, cast

import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from txrouter.acmeconfig import Acme
from txrouter.acmestorage import AcmeStorage, new_key_pem

__all__ = ["AcmeClient", "AcmeError", "Order", "describe_failure"]

#: Seconds the CA has to validate an order's challenges and issue it.
ORDER_TIMEOUT = 90.0
#: Seconds one HTTP request to the CA may take.
NETWORK_TIMEOUT = 30


class AcmeError(Exception):
    """
    An order that cannot go on; the message says why.
    """


@dataclass
class Order:
    """
    One order, placed and waiting for its challenges.

    @ivar name: the host name it is for.
    @ivar key_pem: the new certificate's private key.
    @ivar answers: the key authorization of each HTTP-01 token (RFC 8555
        section 8.3), for the site to serve while the CA checks.
    """

    name: str
    key_pem: bytes
    resource: messages.OrderResource
    answers: dict[bytes, bytes] = field(default_factory=dict)
    responses: list[tuple[messages.ChallengeBody, Any]] = field(default_factory=list)


class AcmeClient:
    """
    The account at one CA and its orders; made lazily, again after a
    failure that may have been the connection's.
    """

    def __init__(self, config: Acme, storage: AcmeStorage) -> None:
        self.config = config
        self.storage = storage
        self._client: client.ClientV2 | None = None

    def order(self, name: str) -> Order:
        """
        Place an order for a certificate for C{name}.

        @raise AcmeError: the CA offers no HTTP-01 challenge for it.
        """
        acme = self._connected()
        key_pem = new_key_pem()
        csr = crypto_util.make_csr(key_pem, [name])
        try:
            resource = acme.new_order(csr)
        except BaseException:
            self._client = None
            raise
        order = Order(name, key_pem, resource)
        for authorization in resource.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue  # validated lately: the CA reuses it
            for challenge in authorization.body.challenges:
                if isinstance(challenge.chall, challenges.HTTP01):
                    response, validation = challenge.chall.response_and_validation(
                        acme.net.key
                    )
                    token = challenge.chall.encode("token").encode("ascii")
                    order.answers[token] = str(validation).encode("ascii")
                    order.responses.append((challenge, response))
                    break
            else:
                offered = ", ".join(
                    str(c.chall.typ) for c in authorization.body.challenges
                )
                raise AcmeError(
                    f"the CA offers no http-01 challenge for {name} (only "
                    f"{offered or 'none'})"
                )
        return order

    def finish(self, order: Order) -> bytes:
        """
        Tell the CA the challenges are ready, wait until it has checked
        them and issued the certificate.

        @return: the certificate chain, PEM.
        """
        acme = self._connected()
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
        try:
            for challenge, response in order.responses:
                acme.answer_challenge(challenge, response)
            done = acme.poll_and_finalize(order.resource, deadline)
        except (requests.RequestException, errors.ClientError):
            self._client = None
            raise
        return str(done.fullchain_pem).encode("ascii")

    def _connected(self) -> client.ClientV2:
        """
        The client of the account (registered first if need be).
        """
        if self._client is not None:
            return self._client
        config = self.config
        key = serialization.load_pem_private_key(
            self.storage.account_key(), password=None
        )
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise AcmeError(f"{self.storage.account_key_path}: not an ECDSA key")
        net = client.ClientNetwork(
            JWKEC(key=key),
            alg=ES256,
            # requests takes a CA file where acme's hint says bool.
            verify_ssl=cast(bool, str(config.ca_bundle) if config.ca_bundle else True),
            user_agent="txrouter",
            timeout=NETWORK_TIMEOUT,
        )
        directory = client.ClientV2.get_directory(config.directory, net)
        acme = client.ClientV2(directory, net)
        # newAccount with a key that has an account returns that account
        # (RFC 8555 section 7.3.1): asked each time, no stale URL is kept.
        registration = messages.NewRegistration.from_data(
            email=config.email, terms_of_service_agreed=True
        )
        try:
            url = str(acme.new_account(registration).uri)
        except errors.ConflictError as e:
            url = e.location
            net.account = messages.RegistrationResource(body=registration, uri=url)
        if url != self.storage.account_url(config.directory):
            self.storage.remember_account(config.directory, url)
        self._client = acme
        return acme


def describe_failure(error: BaseException) -> str:
    """
    Why an order failed, in one line: the CA's own words where it gave
    them (the challenge's error, a rate limit).
    """
    if isinstance(error, errors.ValidationError):
        reasons = []
        for authorization in error.failed_authzrs:
            name = authorization.body.identifier.value
            for challenge in authorization.body.challenges:
                if challenge.error is not None:
                    reasons.append(f"{name}: {_problem(challenge.error)}")
        return "the CA could not validate the challenge: " + "; ".join(reasons)
    if isinstance(error, messages.Error):
        return f"the CA refused: {_problem(error)}"
    if isinstance(error, errors.TimeoutError):
        return f"the CA did not validate and issue within {ORDER_TIMEOUT:g}s"
    if isinstance(error, requests.RequestException):
        return f"cannot reach the CA: {error}"
    if isinstance(error, (AcmeError, OSError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _problem(error: messages.Error) -> str:
    """
    An RFC 7807 problem the CA sent: its type (short) and detail.
    """
    kind = str(error.typ or "").rsplit(":", 1)[-1]
    detail = error.detail or error.description or ""
    return f"{kind}: {detail}" if kind else str(detail)
