"""`Authorization: Key <token>` → user name, from the configured token table.

A token table entry is either the key itself or `sha256:<hex digest of the key>`, so the deployment's environment
need not hold plain keys (`python -c "import hashlib;print(hashlib.sha256(b'KEY').hexdigest())"`).

Browsers cannot add that header to a plain page load or a download link, so the HTML page stores the key in a
`ltxtrain_key` cookie (SameSite=Strict) and *read-only* routes (GET) accept it too. Anything that changes state
(submit, cancel, inference) needs the header, so a cross-site form cannot act with a visitor's cookie.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request

COOKIE = "ltxtrain_key"


class Auth:
    def __init__(self, tokens: dict[str, str]):
        self._tokens = dict(tokens)

    def user_for_token(self, token: str | None) -> str | None:
        if not token:
            return None
        found = None
        digest = "sha256:" + hashlib.sha256(token.encode()).hexdigest()
        for known, user in self._tokens.items():  # compare against every token: no early exit on a match
            presented = digest if known.startswith("sha256:") else token
            if hmac.compare_digest(known.lower().encode() if known.startswith("sha256:") else known.encode(),
                                   presented.encode()):
                found = user
        return found

    def user(self, request: Request, allow_cookie: bool = False) -> str:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "key" or not token.strip():
                raise unauthorized("the Authorization header must be 'Key <token>'")
            user = self.user_for_token(token.strip())
            if user is None:
                raise unauthorized("unknown API key")
            return user
        if allow_cookie:
            user = self.user_for_token(request.cookies.get(COOKIE))
            if user is not None:
                return user
        raise unauthorized("missing Authorization header ('Key <token>')")


def unauthorized(msg: str) -> HTTPException:
    return HTTPException(status_code=401, detail=[{"loc": ["header", "Authorization"], "msg": msg}],
                         headers={"WWW-Authenticate": "Key"})
