"""Checks inkan's OpenID Connect provider with a stock library (PyJWT).

Usage: stock_client.py ISSUER CA_FILE CLIENT_ID ID_TOKEN NONCE [ALG]
Fetches the discovery document and the JWKS over HTTPS (trusting CA_FILE only),
then has PyJWT verify the ID token: an ALG (ES256 unless given) signature by a key from the JWKS,
issuer, audience, expiry, and the nonce. Exits non-zero with a message otherwise.
"""
import json
import ssl
import sys
import urllib.request

import jwt

issuer, ca_file, client_id, id_token, nonce = sys.argv[1:6]
alg = sys.argv[6] if len(sys.argv) > 6 else "ES256"
ctx = ssl.create_default_context(cafile=ca_file)
with urllib.request.urlopen(issuer + "/.well-known/openid-configuration", context=ctx) as r:
    discovery = json.load(r)
for field in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "response_types_supported",
              "subject_types_supported", "id_token_signing_alg_values_supported"):
    assert field in discovery, f"discovery lacks {field}"
assert discovery["issuer"] == issuer, discovery["issuer"]
assert alg in discovery["id_token_signing_alg_values_supported"], discovery["id_token_signing_alg_values_supported"]
keys = jwt.PyJWKClient(discovery["jwks_uri"], ssl_context=ctx)
key = keys.get_signing_key_from_jwt(id_token)
claims = jwt.decode(id_token, key.key, algorithms=[alg], audience=client_id, issuer=issuer,
                    options={"require": ["exp", "iat", "iss", "aud", "sub"]})
assert claims["nonce"] == nonce, claims
print(json.dumps(claims))
