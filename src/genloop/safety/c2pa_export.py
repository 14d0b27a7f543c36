"""C2PA export: a GenLoop PNG re-issued with a C2PA manifest (Content Credentials) that other tools can read.

GenLoop's own provenance (:mod:`.provenance`) is an ed25519 envelope in an iTXt chunk that only GenLoop
reads. C2PA is the industry format (Adobe, camera makers, social platforms) for the same claim. This module
keeps the PNG's pixels and chunks, GenLoop's manifest included, and adds a C2PA manifest store (a ``caBX``
chunk) holding:

- the claim generator ``GenLoop <version>``;
- a ``c2pa.actions`` assertion: ``c2pa.created`` with the IPTC digital source type *trainedAlgorithmicMedia*
  (the standard way to say "made by a generative model");
- an ``org.genloop.provenance`` assertion: the generation id, the model's sha256, the creation time, the
  GenLoop key id and the recipe, copied from the file's (valid) GenLoop manifest.

It is signed with *this installation's* ed25519 key (:func:`.provenance.private_key`), which C2PA wants
wrapped in an X.509 certificate: :func:`certificate` makes a self-signed one on first use and keeps it beside
the key (``keys/c2pa_cert.pem``; the private key stays where it is, mode 0600). That certificate is **not from a
trusted certificate authority**, so C2PA validators (c2patool, contentcredentials.org/verify) report the
signer as *untrusted* (``signingCredential.untrusted``) while still checking that the manifest and the image
are intact; a byte changed in the image data is reported as ``assertion.dataHash.mismatch``. Only PNG is
supported. ``c2pa-python`` is optional and imported only here, when used.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError

ASSERTION_LABEL = "org.genloop.provenance"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CERTIFICATE = "c2pa_cert.pem"
ISSUER = "GenLoop (self-signed)"  # the certificate's organisation: what describe() recognises as ours
SUFFIX = ".c2pa.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
UNTRUSTED = "signingCredential.untrusted"  # the one failure a self-signed certificate always gets
INSTALL = "C2PA export needs c2pa-python, which is not installed: pip install c2pa-python"


def require_c2pa() -> Any:
    """The c2pa module, or one line saying how to install it."""
    try:
        import c2pa
    except ImportError:
        raise ConfigError(INSTALL) from None
    return c2pa


# ------------------------------------------------------------------------------------------ certificate


def certificate() -> bytes:
    """This installation's C2PA signing certificate (PEM): self-signed, for the ed25519 key of
    :func:`.provenance.private_key`, made on first use (and again if the key changed). Not from a trusted CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from . import provenance

    key = provenance.private_key()
    path = provenance.key_dir() / CERTIFICATE
    if path.is_file():
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            if cert.public_key() == key.public_key():
                return path.read_bytes()
        except ValueError:
            pass  # unreadable: replaced below (it is public and derived from the key)
    from ..serialization import atomic_write

    pem = _self_signed(key, provenance.key_id(key.public_key())).public_bytes(serialization.Encoding.PEM)
    with atomic_write(path) as f:
        f.write(pem)
    return pem


def _self_signed(key: Any, kid: str) -> Any:
    """An end-entity certificate for ``key``, signed by itself: the profile C2PA asks of a signing certificate
    (digitalSignature key usage, an extended key usage, not a CA)."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"GenLoop key {kid}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ISSUER),
        ]
    )
    now = _dt.datetime.now(_dt.timezone.utc)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, None)  # ed25519: no separate hash
    )


# ------------------------------------------------------------------------------------------------ export


def _genloop_manifest(src: Path) -> dict[str, Any]:
    """The GenLoop manifest of a PNG, which must verify as valid (a tampered or unsigned file gets no C2PA)."""
    from . import provenance

    if not src.is_file():
        raise DataError(f"{src}: no such file")
    with open(src, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            raise DataError(f"{src}: not a PNG image (C2PA export supports PNG only)")
    result = provenance.check_file(src)
    if result.status != provenance.VALID or not result.manifests:
        why = f"{result.status}" + (f": {result.detail}" if result.detail else "")
        raise DataError(f"{src}: not a GenLoop PNG with a valid manifest ({why}; see `genloop verify`)")
    return result.manifests[0]


def manifest_definition(genloop: dict[str, Any], title: str) -> dict[str, Any]:
    """The C2PA manifest definition (c2pa-python's JSON) for one GenLoop manifest."""
    from .. import __version__

    return {
        "claim_generator_info": [{"name": "GenLoop", "version": __version__}],
        "title": title,
        "format": "image/png",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA}]},
            },
            {
                "label": ASSERTION_LABEL,
                "data": {
                    "generation_id": genloop.get("generation_id"),
                    "model_sha256": genloop.get("model_sha256"),
                    "created": genloop.get("created"),
                    "genloop_key_id": genloop.get("key_id"),
                    "recipe": genloop.get("recipe"),
                },
            },
        ],
    }


def export_c2pa(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write ``dst``: the GenLoop PNG ``src`` (pixels and chunks unchanged) plus a C2PA manifest signed with this
    installation's key under a self-signed certificate (see the module docstring: validators call the signer
    untrusted). Raises DataError for a file that is not a PNG with a valid GenLoop manifest, ConfigError when
    c2pa-python is missing."""
    from cryptography.hazmat.primitives import serialization

    from ..serialization import atomic_write
    from . import provenance

    c2pa = require_c2pa()
    src, dst = Path(src), Path(dst)
    definition = manifest_definition(_genloop_manifest(src), dst.name)
    key = provenance.private_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ED25519, certificate(), key, None)
    # no thumbnail: the generated image is small and already in the file
    context = c2pa.Context(c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}}))
    out = io.BytesIO()
    try:
        with c2pa.Signer.from_info(info) as signer, c2pa.Builder(definition, context=context) as builder:
            with open(src, "rb") as source:
                builder.sign(signer, "image/png", source, out)
    except c2pa.C2paError as e:
        raise DataError(f"{src}: C2PA signing failed ({' '.join(str(e).split())[:160]})") from None
    with atomic_write(dst) as f:
        f.write(out.getvalue())
    return dst


# ----------------------------------------------------------------------------------------------- reading


def has_c2pa(path: str | os.PathLike) -> bool:
    """Whether a PNG holds a C2PA manifest store (a ``caBX`` chunk): a cheap check that needs no c2pa-python."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                return False
            while header := f.read(8):
                if len(header) < 8:
                    return False
                size, kind = int.from_bytes(header[:4], "big"), header[4:]
                if kind == b"caBX":
                    return True
                if kind == b"IEND":
                    return False
                f.seek(size + 4, os.SEEK_CUR)  # data and CRC
    except OSError:
        return False
    return False


def read_c2pa(path: str | os.PathLike) -> dict[str, Any] | None:
    """The C2PA manifest of a PNG, or None when it has none: ``{"assertions": {label: data}, "claim_generator",
    "signer" (c2pa's signature_info), "validation_state" ("Invalid", "Valid" or "Trusted"), "failures" (the
    validation failure codes), "intact" (no failure but an untrusted signer), "trusted"}``."""
    c2pa = require_c2pa()
    path = Path(path)
    try:
        with open(path, "rb") as f:
            reader = c2pa.Reader.try_create("image/png", f)
            if reader is None:
                return None
            with reader:
                active = reader.get_active_manifest() or {}
                state = reader.get_validation_state()
                results = reader.get_validation_results() or {}
    except c2pa.C2paError as e:
        raise DataError(f"{path}: unreadable C2PA data ({' '.join(str(e).split())[:160]})") from None
    failures = [str(x.get("code")) for x in (results.get("activeManifest") or {}).get("failure", [])]
    return {
        "assertions": {a.get("label"): a.get("data") for a in active.get("assertions", [])},
        "claim_generator": active.get("claim_generator_info"),
        "signer": active.get("signature_info") or {},
        "validation_state": state,
        "failures": failures,
        "intact": state != "Invalid" and all(code == UNTRUSTED for code in failures),
        "trusted": state == "Trusted",
    }


def describe(path: str | os.PathLike) -> str | None:
    """The ``genloop verify`` phrase for a PNG's C2PA manifest, or None when it has none."""
    if not has_c2pa(path):
        return None
    try:
        found = read_c2pa(path)
    except ConfigError:
        return "c2pa: present, not checked (pip install c2pa-python)"
    except DataError:
        return "c2pa: present, unreadable"
    if found is None:
        return None
    if not found["intact"]:
        bad = [code for code in found["failures"] if code != UNTRUSTED]
        return f"c2pa: present, TAMPERED ({', '.join(bad) or found['validation_state']})"
    if found["trusted"]:
        return "c2pa: present, intact, signer trusted"
    signer = found["signer"].get("common_name") or "unknown signer"
    if found["signer"].get("issuer") == ISSUER:
        signer += ", self-signed"
    return f"c2pa: present, intact, signer untrusted ({signer})"
