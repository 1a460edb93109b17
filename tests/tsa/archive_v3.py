"""The input of a CAdES archive-time-stamp-v3 (ETSI EN 319 122-1 5.5.2,
5.5.3), recomputed from the finished signature with asn1crypto alone, so
that `openssl ts -verify -data` can check the token against it.

usage: archive_v3.py DATA SIG.p7s OUT_INPUT OUT_TOKEN [--newest]

Checks on the way, each an exit 1 with a message:
- one archive-time-stamp-v3 among the signer's unsigned attributes (with
  --newest: at least one, and the newest, by its time, is checked; the
  others are unsigned attribute values it covers);
- its token carries one ats-hash-index-v3 whose hash algorithm is SHA-256
  (the only one inkan writes), and the token's imprint is SHA-256 too;
- every hash in the index names an item the signature holds, and every
  certificate, CRL and unsigned attribute value the signature holds is in
  the index (nothing was added after the archive time-stamp here: the same
  TSA stamped the signature and the archive).

Writes the input (eContentType, the digest of DATA, the SignerInfo's
signed fields, the index) and the token (a ContentInfo) to the files
given. Prints the counts in the index as one JSON line.
"""
import hashlib
import json
import sys

from asn1crypto import cms, core, tsp  # noqa: F401 (tsp: TSTInfo content)

ATS_V3 = "0.4.0.1733.2.4"
ATS_HASH_INDEX_V3 = "0.4.0.19122.1.5"
SHA256 = "2.16.840.1.101.3.4.2.1"


class HashIndex(core.Sequence):
    _fields = [
        ("hash_ind_algorithm", cms.DigestAlgorithm),
        ("certificates_hash_index", core.SequenceOf, {"spec": core.OctetString}),
        ("crls_hash_index", core.SequenceOf, {"spec": core.OctetString}),
        ("unsigned_attr_values_hash_index", core.SequenceOf, {"spec": core.OctetString}),
    ]


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def main():
    data_path, sig_path, out_input, out_token = sys.argv[1:5]
    newest = "--newest" in sys.argv[5:]
    data = open(data_path, "rb").read()
    signed = cms.ContentInfo.load(open(sig_path, "rb").read())["content"]
    signer = signed["signer_infos"][0]
    unsigned = list(signer["unsigned_attrs"])
    types = [a["type"].dotted for a in unsigned]
    if types.count(ATS_V3) != 1 and not (newest and types.count(ATS_V3) > 1):
        fail(f"not one archive-time-stamp-v3 among {types}")

    def gen_time(attr):
        info = cms.ContentInfo.load(attr["values"][0].dump())["content"]["encap_content_info"]["content"].parsed
        return info["gen_time"].native

    ats = max((a for a in unsigned if a["type"].dotted == ATS_V3), key=gen_time)
    token = cms.ContentInfo.load(ats["values"][0].dump())
    token_signer = token["content"]["signer_infos"][0]
    token_unsigned = token_signer["unsigned_attrs"]
    token_unsigned = [] if isinstance(token_unsigned, core.Void) else list(token_unsigned)
    indices = [a for a in token_unsigned if a["type"].dotted == ATS_HASH_INDEX_V3]
    if len(indices) != 1:
        fail("the archive time-stamp token carries no ats-hash-index-v3")
    index_der = indices[0]["values"][0].dump()
    index = HashIndex.load(index_der)
    if index["hash_ind_algorithm"]["algorithm"].dotted != SHA256:
        fail("hashIndAlgorithm is not SHA-256")
    tst_info = token["content"]["encap_content_info"]["content"].parsed
    if tst_info["message_imprint"]["hash_algorithm"]["algorithm"].dotted != SHA256:
        fail("the archive time-stamp's imprint is not SHA-256")

    h = lambda b: hashlib.sha256(b).digest()  # noqa: E731
    held = {
        "certificates": {h(c.dump()) for c in signed["certificates"]},
        "crls": {h(c.dump()) for c in signed["crls"]},
        "unsigned attribute values": {
            h(a["type"].dump() + v.dump()) for a in unsigned if a is not ats for v in a["values"]
        },
    }
    listed = {
        "certificates": index["certificates_hash_index"],
        "crls": index["crls_hash_index"],
        "unsigned attribute values": index["unsigned_attr_values_hash_index"],
    }
    counts = {}
    for name, hashes in listed.items():
        hashes = {o.native for o in hashes}
        if hashes != held[name]:
            fail(f"{name}: index {len(hashes)}, signature {len(held[name])}, "
                 f"{len(hashes - held[name])} listed but absent")
        counts[name] = len(hashes)

    content_type = signed["encap_content_info"]["content_type"].dump()
    fields = b"".join(signer[f].dump() for f in (
        "version", "sid", "digest_algorithm", "signed_attrs", "signature_algorithm", "signature"))
    open(out_input, "wb").write(content_type + h(data) + fields + index_der)
    open(out_token, "wb").write(token.dump())
    print(json.dumps(counts))


main()
