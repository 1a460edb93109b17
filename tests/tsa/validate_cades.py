"""pyHanko's CMS validation of a detached CAdES signature (B-T: with its
signature time-stamp), offline, revocation hard-fail: the signer's chain
and the TSA's each against their own trust root, with the CRLs given.

usage: validate_cades.py DATA SIG.p7s --root PEM --cert PEM... --crl DER...
                         --tsa-root PEM --tsa-crl DER... [--embedded]

With --embedded (B-LT), the intermediate certificates and the CRLs come
from the signature's own SignedData only: what it carries must suffice.
Prints one JSON line; exits 0 only if the signature and its time-stamp are
both valid and trusted.
"""
import argparse
import asyncio
import json
import sys
import warnings

warnings.filterwarnings("ignore")

from asn1crypto import cms, crl as asn1_crl, pem, x509  # noqa: E402
from pyhanko.sign.validation.generic_cms import async_validate_detached_cms  # noqa: E402
from pyhanko_certvalidator import ValidationContext  # noqa: E402


def certs(paths):
    out = []
    for p in paths:
        data = open(p, "rb").read()
        if pem.detect(data):
            for _, _, der in pem.unarmor(data, multiple=True):
                out.append(x509.Certificate.load(der))
        else:
            out.append(x509.Certificate.load(data))
    return out


def crls(paths):
    out = []
    for p in paths:
        data = open(p, "rb").read()
        if pem.detect(data):
            _, _, data = pem.unarmor(data)
        out.append(asn1_crl.CertificateList.load(data))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("sig")
    ap.add_argument("--root", action="append", default=[])
    ap.add_argument("--cert", action="append", default=[])
    ap.add_argument("--crl", action="append", default=[])
    ap.add_argument("--tsa-root", action="append", default=[])
    ap.add_argument("--tsa-crl", action="append", default=[])
    ap.add_argument("--embedded", action="store_true")
    a = ap.parse_args()
    ci = cms.ContentInfo.load(open(a.sig, "rb").read())
    sd = ci["content"]
    if a.embedded:
        other = [c.chosen for c in (sd["certificates"] or [])]
        revocation = [c.chosen for c in (sd["crls"] or [])]
        tsa_other, tsa_revocation = other, revocation
    else:
        other, revocation = certs(a.cert), crls(a.crl)
        tsa_other, tsa_revocation = [], crls(a.tsa_crl)
    vc = ValidationContext(
        trust_roots=certs(a.root), other_certs=other, crls=revocation,
        allow_fetching=False, revocation_mode="hard-fail",
    )
    ts_vc = ValidationContext(
        trust_roots=certs(a.tsa_root), other_certs=tsa_other, crls=tsa_revocation,
        allow_fetching=False, revocation_mode="hard-fail",
    )
    status = asyncio.run(async_validate_detached_cms(
        open(a.data, "rb").read(), sd, signer_validation_context=vc, ts_validation_context=ts_vc,
    ))
    ts = status.timestamp_validity
    out = {
        "bottom_line": bool(status.bottom_line),
        "intact": bool(status.intact),
        "valid": bool(status.valid),
        "trusted": bool(status.trusted),
        "timestamp": None if ts is None else {
            "intact": bool(ts.intact), "valid": bool(ts.valid), "trusted": bool(ts.trusted),
            "time": ts.timestamp.isoformat(),
        },
        "summary": status.summary(),
    }
    print(json.dumps(out))
    ok = out["bottom_line"] and ts is not None and ts.intact and ts.valid and ts.trusted
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
