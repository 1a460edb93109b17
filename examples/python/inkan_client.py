#!/usr/bin/env python3
"""A signing system's client for inkan, built from its OpenAPI document.

It knows no path, method, parameter, content type or answer shape of its own:
it reads `GET /openapi.json` and calls operations by their operation IDs, sends
each credential where the operation's security scheme says, refuses to send a
body of a type the operation does not take, and checks every answer against the
document (the status is one the operation names; a JSON body matches its
schema). What it does, as an electronic prescription system would:

1. log a doctor in with an HPKI card over OpenID Connect (authorization code
   with PKCE; the card is the TLS client certificate on the card listener),
2. ask who the session is (`me`),
3. sign a prescription document (XAdES in the national profile, `sign`),
4. verify the signed document (`verify`),
5. log out (`revoke`), after which the token is refused.

It prints one JSON object with what it found and writes the signed document to
`--out`. Only Python's standard library is used.

    INKAN_CLIENT_SECRET=... python3 inkan_client.py --base https://localhost:8443 \\
        --ca fixtures/pki/hpki-root.pem \\
        --card-cert fixtures/pki/holders/hpki-doctor.pem --card-key fixtures/pki/holders/hpki-doctor.key \\
        --client-id ID --redirect-uri https://rx.example.jp/callback \\
        --prescription rx.xml --out rx-signed.xml

The client secret is read from INKAN_CLIENT_SECRET (never a command-line
argument: other users of the machine can read those).
"""

import argparse
import base64
import hashlib
import json
import os
import secrets
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request


class Refused(Exception):
    """An answer the document does not allow, or a step that did not go as OAuth says."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def _fetch(context, method, url, headers=None, body=None):
    """One HTTPS exchange, redirects not followed: (status, headers, body)."""
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirect)
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=30) as resp:
            return Answer(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.headers, e.read())


class OpenApiClient:
    """Calls the operations of an OpenAPI 3.1 document by operation ID."""

    def __init__(self, document, context):
        self.doc = document
        self.context = context
        self.base = document["servers"][0]["url"].rstrip("/")
        self.operations = {}
        for path, item in document["paths"].items():
            for method, op in item.items():
                if method in ("get", "put", "post", "delete", "patch", "head"):
                    self.operations[op["operationId"]] = (method.upper(), path, op)

    @classmethod
    def load(cls, base, context):
        answer = _fetch(context, "GET", base.rstrip("/") + "/openapi.json")
        if answer.status != 200:
            raise Refused(f"GET /openapi.json answered {answer.status}")
        return cls(answer.json(), context)

    def call(self, operation_id, params=None, body=None, content_type=None, bearer=None, basic=None):
        method, path, op = self.operations[operation_id]
        headers = {}
        schemes = [name for requirement in op.get("security", []) for name in requirement]
        if bearer is not None:
            if "session" not in schemes:
                raise Refused(f"{operation_id} takes no bearer token")
            headers["Authorization"] = "Bearer " + bearer
        if basic is not None:
            if "client" not in schemes:
                raise Refused(f"{operation_id} takes no client authentication")
            pair = ":".join(urllib.parse.quote(part, safe="") for part in basic)
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        for name in params or {}:
            if name not in names:
                raise Refused(f"{operation_id} has no query parameter {name}")
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = None
        if body is not None:
            taken = op.get("requestBody", {}).get("content", {})
            if content_type not in taken:
                raise Refused(f"{operation_id} does not take {content_type} (it takes {sorted(taken)})")
            if isinstance(body, (dict, list)):
                if content_type == "application/x-www-form-urlencoded":
                    data = urllib.parse.urlencode(body).encode()
                else:
                    data = json.dumps(body).encode()
            else:
                data = body
            self.check(taken[content_type].get("schema"), body if isinstance(body, dict) else None, "request")
            headers["Content-Type"] = content_type
        answer = _fetch(self.context, method, url, headers, data)
        documented = op["responses"].get(str(answer.status))
        if documented is None:
            raise Refused(f"{operation_id} answered {answer.status}, which the document does not name")
        media = (answer.headers.get("Content-Type") or "").split(";")[0].strip()
        content = documented.get("content", {})
        if answer.body and content and media not in content:
            raise Refused(f"{operation_id} answered {media}, not one of {sorted(content)}")
        schema = content.get(media, {}).get("schema")
        if media == "application/json" and schema is not None:
            self.check(schema, answer.json(), f"{operation_id} {answer.status}")
        return answer

    def check(self, schema, value, where):
        """Checks `value` against a JSON Schema of the document (what this
        document uses: $ref, allOf, oneOf, type, required, properties,
        additionalProperties false, items, enum)."""
        if schema is None or value is None and where == "request":
            return
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            return self.check(self.doc["components"]["schemas"][name], value, where)
        for part in schema.get("allOf", []):
            self.check(part, value, where)
        if "oneOf" in schema:
            fits = 0
            for part in schema["oneOf"]:
                try:
                    self.check(part, value, where)
                    fits += 1
                except Refused:
                    pass
            if fits != 1:
                raise Refused(f"{where}: {value!r} fits {fits} of oneOf, not one")
        kinds = schema.get("type")
        if kinds is not None:
            kinds = kinds if isinstance(kinds, list) else [kinds]
            python = {"string": str, "boolean": bool, "object": dict, "array": list, "null": type(None)}
            fits = any(
                (k in ("integer", "number") and isinstance(value, (int, float)) and not isinstance(value, bool))
                or (k in python and isinstance(value, python[k]))
                for k in kinds
            )
            if not fits:
                raise Refused(f"{where}: {value!r} is not {kinds}")
        if "enum" in schema and value not in schema["enum"]:
            raise Refused(f"{where}: {value!r} is not one of {schema['enum']}")
        if isinstance(value, dict):
            for name in schema.get("required", []):
                if name not in value:
                    raise Refused(f"{where}: {name} is missing")
            properties = schema.get("properties", {})
            for name, item in value.items():
                if name in properties:
                    self.check(properties[name], item, f"{where}.{name}")
                elif schema.get("additionalProperties") is False:
                    raise Refused(f"{where}: {name} is not in the schema")
        if isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                self.check(schema["items"], item, f"{where}[{i}]")


def card_login(api, context, card_context, client_id, client_secret, redirect_uri):
    """OpenID Connect with an HPKI card: the tokens of `token`."""
    discovery = _fetch(context, "GET", api.base + "/.well-known/openid-configuration").json()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
        "scope": "openid profile sign", "state": state, "nonce": nonce, "acr_values": "hpki",
        "code_challenge": challenge, "code_challenge_method": "S256",
    })
    # inkan sends the browser to its card listener, which asks for the card.
    to_card = _fetch(context, "GET", discovery["authorization_endpoint"] + "?" + query)
    if to_card.status not in (302, 303):
        raise Refused(f"authorize answered {to_card.status}: {to_card.body[:200]!r}")
    back = _fetch(card_context, "GET", to_card.headers["Location"])
    if back.status not in (302, 303):
        raise Refused(f"the card login answered {back.status}: {back.body[:200]!r}")
    location = back.headers["Location"]
    shown = location.split("?")[0]  # never the code itself
    if not location.startswith(redirect_uri + "?"):
        raise Refused(f"the card login went to {shown}, not the redirect URI")
    got = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    if got.get("state") != state or "code" not in got:
        error = got.get("error", "no code")
        raise Refused(f"the redirect to {shown} carries no code for this state ({error})")
    form = {"grant_type": "authorization_code", "code": got["code"], "redirect_uri": redirect_uri,
            "code_verifier": verifier}
    answer = api.call("token", body=form, content_type="application/x-www-form-urlencoded",
                      basic=(client_id, client_secret))
    if answer.status != 200:
        raise Refused(f"token answered {answer.status}: {answer.body!r}")
    return answer.json()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="inkan's URL, e.g. https://localhost:8443")
    parser.add_argument("--ca", required=True, help="the CA certificates inkan's TLS certificate chains to (PEM)")
    parser.add_argument("--card-cert", required=True, help="the HPKI card's certificate (PEM)")
    parser.add_argument("--card-key", required=True, help="the HPKI card's key (PEM)")
    parser.add_argument("--client-id", required=True)

    parser.add_argument("--redirect-uri", required=True)
    parser.add_argument("--prescription", required=True, help="an e-prescription document (XML) to sign")
    parser.add_argument("--out", required=True, help="where the signed document is written")
    args = parser.parse_args()
    client_secret = os.environ.get("INKAN_CLIENT_SECRET")
    if not client_secret:
        parser.error("set INKAN_CLIENT_SECRET to the signing system's client secret")

    context = ssl.create_default_context(cafile=args.ca)
    card_context = ssl.create_default_context(cafile=args.ca)
    card_context.load_cert_chain(args.card_cert, args.card_key)
    api = OpenApiClient.load(args.base, context)

    tokens = card_login(api, context, card_context, args.client_id, client_secret, args.redirect_uri)
    access = tokens["access_token"]
    me = api.call("me", bearer=access).json()

    with open(args.prescription, "rb") as f:
        document = f.read()
    signed = api.call("sign", params={"format": "xades"}, body=document, content_type="application/xml",
                      bearer=access)
    if signed.status != 200:
        raise Refused(f"sign answered {signed.status}: {signed.body!r}")
    with open(args.out, "wb") as f:
        f.write(signed.body)

    report = api.call("verify", body=signed.body, content_type="application/xml", bearer=access)
    if report.status != 200:
        raise Refused(f"verify answered {report.status}: {report.body!r}")
    report = report.json()

    revoked = api.call("revoke", body={"token": access}, content_type="application/x-www-form-urlencoded",
                       basic=(args.client_id, client_secret))
    after = api.call("me", bearer=access)
    print(json.dumps({
        "operations": len(api.operations),
        "user_id": me["user_id"],
        "method": me["method"],
        "signed_bytes": len(signed.body),
        "indication": report["indication"],
        "sub_indication": report.get("sub_indication"),
        "signatures": [
            {"format": s["format"], "kind": s.get("kind"), "level": s["level"], "indication": s["indication"],
             "sub_indication": s.get("sub_indication"), "signer": s.get("signer", {}).get("name"),
             "undecided": [c["check"] + ": " + c["detail"] for c in s["checks"] if c["result"] != "passed"]}
            for s in report["signatures"]
        ],
        "revoked": revoked.status,
        "after_revoke": after.status,
    }, ensure_ascii=False))
    # INDETERMINATE (e.g. TRY_LATER: no current CRL at hand for the chain)
    # is not a pass either: the report says what was missing.
    return 0 if report["indication"] == "TOTAL_PASSED" else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Refused as e:
        print(f"inkan_client: {e}", file=sys.stderr)
        sys.exit(2)
