"""Who may see the status page, and which forms it accepts: HTTP basic auth and CSRF tokens.

    no or malformed Authorization       401 with a WWW-Authenticate challenge
    wrong user or password             401, the same (which one was wrong is not said)
    right                              the page
    a POST without a valid token       403: the token is an HMAC of the user and the time it was
                                       issued, keyed by the password; valid for TOKEN_TTL
    a POST a browser marks cross-site  403 (Sec-Fetch-Site: a form on another site, with the browser's
                                       remembered credentials, never acts here)

User and password are compared as SHA-256 digests with `hmac.compare_digest`, both of them every time:
how long a refusal takes says nothing about how much of either was right. The token needs no server
state, so any number of receiver processes accept each other's; changing the password invalidates every
token with every session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable

TOKEN_TTL = 2 * 3600          # a page left open this long must be reloaded before it may act
_CLOCK_SKEW = 60


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class Guard:
    def __init__(self, user: str, password: str, *, clock: Callable[[], float] = time.time) -> None:
        self._user, self._password = _digest(user), _digest(password)
        self._key = hmac.new(password.encode("utf-8"), b"smsdispatch status page: csrf", hashlib.sha256).digest()
        self.clock = clock

    def user(self, environ: dict) -> str | None:
        """The authenticated user of a request, or None."""
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            return None
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        ok_user = hmac.compare_digest(_digest(user), self._user)
        ok_password = hmac.compare_digest(_digest(password), self._password)
        return user if (ok_user and ok_password and sep) else None

    def token(self, user: str) -> str:
        issued = str(int(self.clock()))
        return f"{issued}.{self._sign(user, issued)}"

    def valid(self, token: str, user: str) -> bool:
        issued, _, signature = token.partition(".")
        if not (issued.isascii() and issued.isdigit()) or not signature:
            return False
        age = self.clock() - int(issued)
        if not -_CLOCK_SKEW <= age <= TOKEN_TTL:
            return False
        return hmac.compare_digest(signature.encode("utf-8"), self._sign(user, issued).encode())

    @staticmethod
    def same_site(environ: dict) -> bool:
        """False when the browser says the request comes from another site (Sec-Fetch-Site); a client
        that sends no such header (curl, an old browser) is judged by the token alone."""
        return environ.get("HTTP_SEC_FETCH_SITE", "same-origin") in ("same-origin", "none")

    def _sign(self, user: str, issued: str) -> str:
        return hmac.new(self._key, f"{user}|{issued}".encode(), hashlib.sha256).hexdigest()
