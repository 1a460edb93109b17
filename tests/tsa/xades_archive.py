"""The input of the newest XAdES archive time-stamp (XAdES 1.4.1,
`xa141:ArchiveTimeStamp`) of an e-prescription document's signature,
recomputed with lxml alone, so that `openssl ts -verify -data` can check
its token against it: each reference's data after its transforms, the
inclusive C14N of SignedInfo, SignatureValue and KeyInfo, then of each
unsigned signature property before that time-stamp (older archive
time-stamps included).

usage: xades_archive.py SIGNED.xml SIGNATURE_ID OUT_TOKEN > INPUT

Prints how many archive time-stamps the signature has on stderr.
"""
import base64
import sys

from lxml import etree

DS = "{http://www.w3.org/2000/09/xmldsig#}"
XA = "{http://uri.etsi.org/01903/v1.3.2#}"
XA141 = "{http://uri.etsi.org/01903/v1.4.1#}"

signed, signature_id, out_token = sys.argv[1:4]
doc = etree.parse(signed)
ids = {}
for e in doc.iter():
    for a in ("id", "Id"):
        if e.get(a):
            ids[e.get(a)] = e
sig = ids[signature_id]


def c14n(e, exc=False):
    return etree.tostring(e, method="c14n", exclusive=exc, with_tail=False)


out = b""
for ref in sig.find(DS + "SignedInfo").findall(DS + "Reference"):
    out += c14n(ids[ref.get("URI")[1:]], ref.find(DS + "Transforms") is not None)
for name in ("SignedInfo", "SignatureValue", "KeyInfo"):
    out += c14n(sig.find(DS + name))
found = []
for child in sig.find(".//" + XA + "UnsignedSignatureProperties"):
    if child.tag == XA141 + "ArchiveTimeStamp":
        found.append((base64.b64decode(child.find(XA + "EncapsulatedTimeStamp").text), out))
    out += c14n(child)
if not found:
    sys.exit("no archive time-stamp")
token, data = found[-1]
open(out_token, "wb").write(token)
print(len(found), file=sys.stderr)
sys.stdout.buffer.write(data)
