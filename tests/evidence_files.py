"""Builders of the files the provenance and video tests read: every one is made here, from
nothing (a C2PA manifest signed with a certificate generated on the spot, XMP packets, PNG
chunks written byte by byte, short videos encoded with PyAV)."""
from __future__ import annotations

import datetime
import io
import json
import struct
import zlib

import numpy as np
from PIL import Image

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"


def picture(seed: int = 0, size: tuple[int, int] = (64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    a = rng.random(3)
    arr = np.clip(a * xx[..., None] + (1 - a) * yy[..., None] + rng.normal(0, 0.05, (h, w, 3)), 0, 1)
    return Image.fromarray((arr * 255).astype(np.uint8))


def jpeg_bytes(img: Image.Image | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    (img or picture()).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def png_bytes(img: Image.Image | None = None) -> bytes:
    buf = io.BytesIO()
    (img or picture()).save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- C2PA
def _signer():
    """A throw-away CA and an ES256 signing certificate under it (not on any trust list)."""
    import c2pa
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fakescope tests")])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def usage(sign: bool):
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=not sign, crl_sign=not sign,
                             encipher_only=False, decipher_only=False)

    def base(subject, issuer, public):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30)))

    ca = (base(name("test CA"), name("test CA"), ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(usage(False), critical=True).sign(ca_key, hashes.SHA256()))
    leaf = (base(name("test signer"), ca.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    pkey = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    return c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, pkey, None))


def c2pa_signed_jpeg(source_type: str = "trainedAlgorithmicMedia", generator: str = "TestGen",
                     img: Image.Image | None = None) -> bytes:
    """A JPEG with a C2PA manifest: one c2pa.created action of this digital source type."""
    import c2pa

    manifest = {"claim_generator_info": [{"name": generator, "version": "1.0"}], "title": "made.jpg",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.created", "digitalSourceType": IPTC + source_type,
                     "softwareAgent": {"name": generator}}]}}]}
    src, out = io.BytesIO(jpeg_bytes(img)), io.BytesIO()
    with c2pa.Builder(json.dumps(manifest)) as builder:
        builder.sign(_signer(), "image/jpeg", src, out)
    return out.getvalue()


def tampered(data: bytes) -> bytes:
    """The same file with one byte of the compressed image changed: the manifest's hash no longer matches."""
    bad = bytearray(data)
    bad[-100] ^= 0x55
    return bytes(bad)


# ---------------------------------------------------------------- XMP, EXIF
def xmp_packet(body: str) -> str:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'{body}</rdf:RDF></x:xmpmeta>')


def dst_description(source_type: str, tool: str | None = None) -> str:
    tool_attr = f' xmp:CreatorTool="{tool}"' if tool else ""
    return ('<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
            f'xmlns:xmp="http://ns.adobe.com/xap/1.0/"{tool_attr}>'
            f'<Iptc4xmpExt:DigitalSourceType>{IPTC}{source_type}</Iptc4xmpExt:DigitalSourceType></rdf:Description>')


def jpeg_with_xmp(packet: str | bytes, img: Image.Image | None = None) -> bytes:
    """A JPEG with an APP1 XMP segment right after SOI, as cameras and editors write it."""
    data = jpeg_bytes(img)
    payload = b"http://ns.adobe.com/xap/1.0/\0" + (packet.encode() if isinstance(packet, str) else packet)
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def jpeg_with_exif(tags: dict[int, str], img: Image.Image | None = None) -> bytes:
    exif = Image.Exif()
    for tag, value in tags.items():
        exif[tag] = value
    return jpeg_bytes(img, exif=exif.tobytes())


# ---------------------------------------------------------------- PNG chunks
def chunk(ctype: bytes, body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return struct.pack(">I", n) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def text_chunk(key: str, value: str) -> bytes:
    return chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))


def itxt_chunk(key: str, value: str, compress: bool = False) -> bytes:
    raw = value.encode("utf-8")
    body = key.encode("latin-1") + b"\0" + bytes([1 if compress else 0, 0]) + b"\0\0" + (
        zlib.compress(raw) if compress else raw)
    return chunk(b"iTXt", body)


def png_with_chunks(*chunks: bytes, img: Image.Image | None = None) -> bytes:
    """A PNG with these chunks inserted before IEND."""
    data = png_bytes(img)
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + b"".join(chunks) + data[iend:]


# ---------------------------------------------------------------- video
def make_video(path, n: int = 24, fps: int = 12, size: tuple[int, int] = (64, 48), codec: str = "libx264",
               fmt: str | None = None) -> None:
    """A short clip: n frames of a moving gradient."""
    import av

    w, h = size
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            arr = np.asarray(picture(i, size))
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
