#!/usr/bin/env python3
"""An OpenID Connect provider for the tests and the demo: authlib's authorization server (code flow,
PKCE S256 required of every client, nonce required, RS256 ID tokens with a JWKS), served by
werkzeug over HTTP, with a login page and the users given on the command line.

For the tests it also has a control API under /_control (only with --control):
  POST /_control/rotate       {"keep_old": bool}   a new signing key (kid) for every token from now on
  POST /_control/next-token   {"fault": NAME}      the next ID token is broken in one way (see FAULTS)
  PUT  /_control/users/NAME   {"password": .., "claims": {..}}   add or change a user
  GET  /_control/stats        how often the JWKS and the token endpoint were read

Usage:
  test_provider.py --port 0 --client ID:SECRET:REDIRECT_URI [--user NAME:PASSWORD[:CLAIMS_JSON]]... [--control]
Prints one JSON line {"event": "ready", "issuer": URL} on stdout once it serves.
"""
import argparse
import base64
import hashlib
import json
import secrets
import sys
import threading
import time
import urllib.parse
import warnings

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify, request
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from markupsafe import escape
from werkzeug.serving import make_server

# The ways /_control/next-token can break the next ID token.
FAULTS = {
    "unpublished_key",  # signed with a key the JWKS does not hold
    "wrong_audience",   # aud names another client
    "wrong_issuer",     # iss is another issuer
    "expired",          # exp an hour ago
    "wrong_nonce",      # nonce is not the one of the request
    "unsigned",         # alg none, no signature
    "bad_signature",    # the signature of another payload
    "hs256",            # HS256 with the client secret as the key (algorithm confusion)
}

LOCK = threading.Lock()
STATE = {
    "keys": [],           # newest first; the first signs
    "published": [],      # kids in the JWKS
    "users": {},          # name -> {"password": str, "claims": dict}
    "clients": {},        # id -> Client
    "codes": {},          # code -> AuthCode
    "fault": None,
    "stats": {"jwks_reads": 0, "token_requests": 0, "authorizations": 0, "logins_refused": 0},
}


def new_key():
    kid = "key-" + secrets.token_hex(4)
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"}, private=True)


class Client:
    def __init__(self, client_id, secret, redirect_uri):
        self.client_id = client_id
        self.client_secret = secret
        self.redirect_uris = [redirect_uri]

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope):
        allowed = {"openid", "email", "profile", "groups"}
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret):
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type == "authorization_code"


class AuthCode:
    def __init__(self, code, client_id, redirect_uri, scope, user, nonce, challenge, method):
        self.code = code
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.scope = scope
        self.user = user
        self.nonce = nonce
        self.code_challenge = challenge
        self.code_challenge_method = method
        self.auth_time = int(time.time())
        self.expires = time.time() + 300

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return self.auth_time

    def get_acr(self):
        return STATE["users"].get(self.user, {}).get("claims", {}).get("acr")

    def get_amr(self):
        return STATE["users"].get(self.user, {}).get("claims", {}).get("amr")


class StrictCodeChallenge(CodeChallenge):
    """PKCE required of every client, and only S256."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE with S256 is required")
        return super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant, result):
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        return super().validate_code_verifier(grant, result)


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def save_authorization_code(self, code, req):
        data = req.payload.data
        with LOCK:
            STATE["codes"][code] = AuthCode(code, req.client.get_client_id(), req.payload.redirect_uri, req.payload.scope,
                                            req.user, data.get("nonce"), data.get("code_challenge"),
                                            data.get("code_challenge_method"))

    def query_authorization_code(self, code, client):
        with LOCK:
            c = STATE["codes"].get(code)
        if c and c.client_id == client.get_client_id() and c.expires > time.time():
            return c
        return None

    def delete_authorization_code(self, authorization_code):
        with LOCK:
            STATE["codes"].pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code):
        return authorization_code.user


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class IDToken(OpenIDCode):
    def __init__(self, issuer):
        super().__init__(require_nonce=True)
        self.issuer = issuer

    def exists_nonce(self, nonce, req):
        return False

    def resolve_client_private_key(self, client):
        with LOCK:
            return STATE["keys"][0]

    def get_client_algorithm(self, client):
        return "RS256"

    def get_encode_header(self, client):
        with LOCK:
            return {"alg": "RS256", "kid": STATE["keys"][0].kid}

    def get_client_claims(self, client):
        now = int(time.time())
        return {"iss": self.issuer, "aud": [client.get_client_id()], "iat": now, "exp": now + 300}

    def generate_user_info(self, user, scope):
        with LOCK:
            claims = dict(STATE["users"][user]["claims"])
        info = UserInfo(sub=claims.pop("sub", user))
        for k, v in claims.items():
            info[k] = v
        return info

    def process_token(self, grant, response):
        token = super().process_token(grant, response)
        with LOCK:
            fault, STATE["fault"] = STATE["fault"], None
        if fault and "id_token" in token:
            token["id_token"] = break_token(token["id_token"], fault, grant.request.client)
        return token


def break_token(id_token, fault, client):
    header_b64, payload_b64, _ = id_token.split(".")
    claims = json.loads(unb64(payload_b64))
    with LOCK:
        key = STATE["keys"][0]
    now = int(time.time())
    if fault == "wrong_audience":
        claims["aud"] = ["someone-else"]
    elif fault == "wrong_issuer":
        claims["iss"] = "http://issuer.invalid"
    elif fault == "expired":
        claims["iat"], claims["exp"] = now - 7200, now - 3600
    elif fault == "wrong_nonce":
        claims["nonce"] = "not-the-nonce-of-this-sign-in"
    elif fault == "unpublished_key":
        key = new_key()
    elif fault == "unsigned":
        return b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode()) + "."
    elif fault == "hs256":
        return jwt.encode({"alg": "HS256", "kid": key.kid}, claims, OctKey.import_key(client.client_secret.encode()))
    elif fault == "bad_signature":
        other = dict(claims, sub="someone-else")
        signed = jwt.encode({"alg": "RS256", "kid": key.kid}, other, key)
        return header_b64 + "." + payload_b64 + "." + signed.split(".")[2]
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Test identity provider: sign in</title></head>
<body><h1 id="provider-title">Test identity provider</h1>
<p>{message}</p>
<form id="login" method="post" action="{action}">
<label for="username">Username</label> <input id="username" name="username" autocomplete="username">
<label for="password">Password</label> <input id="password" name="password" type="password" autocomplete="current-password">
<button id="sign-in" type="submit">Sign in</button>
</form></body></html>"""


def create_app(issuer, control):
    app = Flask(__name__)
    server = AuthorizationServer(app, query_client=lambda cid: STATE["clients"].get(cid), save_token=lambda token, req: None)
    server.register_grant(CodeGrant, [StrictCodeChallenge(required=True), IDToken(issuer)])

    @app.get("/.well-known/openid-configuration")
    def discovery():
        return jsonify({
            "issuer": issuer,
            "authorization_endpoint": issuer + "/authorize",
            "token_endpoint": issuer + "/token",
            "jwks_uri": issuer + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "email", "profile", "groups"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "email", "email_verified", "name", "groups", "amr", "acr"],
        })

    @app.get("/jwks")
    def jwks():
        with LOCK:
            STATE["stats"]["jwks_reads"] += 1
            keys = [k.as_dict(private=False) for k in STATE["keys"] if k.kid in STATE["published"]]
        return jsonify({"keys": keys})

    @app.route("/authorize", methods=["GET", "POST"])
    def authorize():
        try:
            grant = server.get_consent_grant(end_user=None)
        except Exception as e:  # an invalid request: no redirect, as the specification says
            return f"invalid authorization request: {escape(str(e))}", 400
        action = "/authorize?" + urllib.parse.urlencode(request.args)
        if request.method == "GET":
            return LOGIN_PAGE.format(message="Sign in to continue to " + escape(grant.client.client_id) + ".", action=escape(action))
        name, password = request.form.get("username", ""), request.form.get("password", "")
        with LOCK:
            user = STATE["users"].get(name)
            ok = user is not None and secrets.compare_digest(user["password"], password)
            if ok:
                STATE["stats"]["authorizations"] += 1
            else:
                STATE["stats"]["logins_refused"] += 1
        if not ok:
            return LOGIN_PAGE.format(message="Wrong username or password.", action=escape(action)), 401
        return server.create_authorization_response(grant_user=name)

    @app.post("/token")
    def token():
        with LOCK:
            STATE["stats"]["token_requests"] += 1
        return server.create_token_response()

    if control:
        @app.post("/_control/rotate")
        def rotate():
            keep = bool((request.get_json(silent=True) or {}).get("keep_old", True))
            with LOCK:
                key = new_key()
                STATE["keys"].insert(0, key)
                STATE["published"] = [key.kid] + (STATE["published"] if keep else [])
            return jsonify({"kid": key.kid, "published": STATE["published"]})

        @app.post("/_control/next-token")
        def next_token():
            fault = (request.get_json(silent=True) or {}).get("fault")
            if fault not in FAULTS:
                return jsonify({"error": f"fault must be one of {sorted(FAULTS)}"}), 400
            with LOCK:
                STATE["fault"] = fault
            return jsonify({"fault": fault})

        @app.put("/_control/users/<name>")
        def put_user(name):
            body = request.get_json(silent=True) or {}
            with LOCK:
                cur = STATE["users"].get(name, {"password": "", "claims": {}})
                STATE["users"][name] = {"password": body.get("password", cur["password"]), "claims": body.get("claims", cur["claims"])}
            return "", 204

        @app.get("/_control/stats")
        def stats():
            with LOCK:
                return jsonify(dict(STATE["stats"], kids=STATE["published"]))

    return app


def main():
    # authlib announces API changes on every request; they say nothing about a run.
    warnings.filterwarnings("ignore", module="authlib")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--client", action="append", default=[], help="ID:SECRET:REDIRECT_URI")
    ap.add_argument("--user", action="append", default=[], help="NAME:PASSWORD[:CLAIMS_JSON]")
    ap.add_argument("--control", action="store_true", help="serve /_control (tests only)")
    args = ap.parse_args()

    for c in args.client:
        cid, secret, redirect = c.split(":", 2)
        STATE["clients"][cid] = Client(cid, secret, redirect)
    for u in args.user:
        parts = u.split(":", 2)
        claims = json.loads(parts[2]) if len(parts) == 3 else {}
        STATE["users"][parts[0]] = {"password": parts[1], "claims": claims}
    key = new_key()
    STATE["keys"] = [key]
    STATE["published"] = [key.kid]

    httpd = make_server(args.host, args.port, None, threaded=True)
    host = f"[{args.host}]" if ":" in args.host else args.host
    issuer = f"http://{host}:{httpd.server_port}"
    httpd.app = create_app(issuer, args.control)
    print(json.dumps({"event": "ready", "issuer": issuer}), flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
