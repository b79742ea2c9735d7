"""Provenance: what a file says about its own origin, read from its metadata, never its pixels.

    read_provenance(data)   encoded bytes -> a JSON-able dict (the `provenance` object of scan
                            lines, the service's answers and the web page)
    read_video_provenance(path_or_bytes)
                            the same object for a video: C2PA, XMP and container / stream tags
    apply_rule(...)         the verdict rule of `--provenance decide` (below)

What is read (each bounded; malformed or hostile metadata becomes a line in `notes`, never an
exception):

- C2PA manifests (JPEG APP11, PNG caBX, WebP, ...) through the `c2pa-python` package (extra
  `provenance`): the validation state, the claim generator, the signer, `c2pa.actions` with their
  `digitalSourceType`, the ingredients. Remote manifests and OCSP are never fetched.
- XMP packets (any container): IPTC `Iptc4xmpExt:DigitalSourceType`, `xmp:CreatorTool`,
  `tiff:Software`, `tiff:Make`. A packet with a DOCTYPE or ENTITY declaration is refused unread
  (XMP has none; entity expansion is how XML bombs work).
- EXIF: Software, Make, Model, Artist, ImageDescription, and UserComment (AUTOMATIC1111 writes
  its generation parameters there in JPEG and WebP).
- PNG text chunks (tEXt, zTXt, iTXt): AUTOMATIC1111 / Forge `parameters`, ComfyUI `prompt` and
  `workflow`, NovelAI's `Software` / `Source` / `Comment`, InvokeAI and Fooocus keys.
- Software / Make / CreatorTool values are matched against GENERATORS, the table of known
  generators below (add a row to teach it a new one).

The rule (`apply_rule`, mode "decide"): the verdict becomes "fake", with
`reason: "provenance: <what>"`, when the file carries an *AI claim*:
  - a C2PA manifest that validates (state Valid or Trusted: signature and hashes intact; the
    signer need not be on a trust list) whose actions state a generative digital source type, or
  - an IPTC/XMP DigitalSourceType stating generative AI (trainedAlgorithmicMedia,
    compositeWithTrainedAlgorithmicMedia), or
  - generation parameters of a known front-end (A1111/Forge, ComfyUI, NovelAI, InvokeAI, Fooocus), or
  - a Software / Make / CreatorTool value naming a known generator.
A claim of AI origin is against the interest of whoever writes it, so it is believed even when
unsigned; the one abuse (tagging a real photo "AI" to discredit it) is why `report` exists.
Never counted: a C2PA manifest that does not validate (its claims are reported, not trusted), any
claim of capture (digitalCapture, a camera Make), and absence: most real photos and most fakes
carry no provenance at all, so "none" is reported as "no provenance", never as evidence of "real".
The pixel score is never changed.
"""
from __future__ import annotations

import io
import json
import re
import struct
import zlib
from typing import Any

MODES = ("off", "report", "decide")
DEFAULT_MODE = "decide"

# (case-insensitive regex, the generator's name). Matched against Software, Make, CreatorTool,
# C2PA claim generators and PNG Software/Source values. Word boundaries keep "Imagen" out of "Imagenes".
GENERATORS: tuple[tuple[str, str], ...] = (
    (r"dall[\-·\s]?e", "DALL-E (OpenAI)"),
    (r"chatgpt|gpt-4o|gpt-image|openai", "OpenAI"),
    (r"\bsora\b", "Sora (OpenAI)"),
    (r"adobe\s*firefly|\bfirefly\b", "Adobe Firefly"),
    (r"midjourney", "Midjourney"),
    (r"stable[\s\-]?diffusion|\bsdxl\b|stability\s*ai|dreamstudio", "Stable Diffusion (Stability AI)"),
    (r"automatic1111|stable-diffusion-webui|\bforge\b.*\bwebui\b", "AUTOMATIC1111 / Forge"),
    (r"comfyui", "ComfyUI"),
    (r"novelai", "NovelAI"),
    (r"invokeai", "InvokeAI"),
    (r"fooocus", "Fooocus"),
    (r"\bimagen\b|google\s*gemini|\bgemini\b|synthid", "Google Imagen / Gemini"),
    (r"bing\s*image\s*creator|microsoft\s*designer|copilot\s*designer", "Microsoft Designer / Bing Image Creator"),
    (r"leonardo\.?ai", "Leonardo.Ai"),
    (r"ideogram", "Ideogram"),
    (r"\bflux(\.1)?\b|black\s*forest\s*labs", "FLUX (Black Forest Labs)"),
    (r"runway(ml)?\b", "Runway"),
    (r"craiyon|dall-e\s*mini", "Craiyon"),
    (r"nightcafe", "NightCafe"),
    (r"playground\s*ai|playgroundai", "Playground AI"),
    (r"kandinsky", "Kandinsky"),
    (r"\bdeepai\b", "DeepAI"),
    (r"dream\s*by\s*wombo|\bwombo\b", "WOMBO Dream"),
    (r"artbreeder", "Artbreeder"),
    (r"\bdiffusers\b", "Hugging Face diffusers"),
)
_GENERATOR_RES = tuple((re.compile(p, re.IGNORECASE), name) for p, name in GENERATORS)

IPTC_DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"
GENERATIVE_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})

# Bounds on what is read and echoed back: metadata is untrusted input.
MAX_CHUNK = 16 * 2**20        # a PNG chunk larger than this is skipped (with a note), not read
MAX_INFLATE = 2 * 2**20       # a compressed text chunk may inflate to this, no more (zip bombs)
MAX_XMP = 4 * 2**20           # one XMP packet
MAX_PACKETS = 8               # XMP packets looked at per file
MAX_TEXT_CHUNKS = 256         # PNG text chunks looked at per file
MAX_VALUE = 2000              # characters of a raw value kept in the report
MAX_NOTES = 20


def find_generator(value: str) -> str | None:
    """The known generator a Software / Make / CreatorTool value names, or None."""
    for rx, name in _GENERATOR_RES:
        if rx.search(value):
            return name
    return None


def _short(value: Any) -> str:
    s = value if isinstance(value, str) else str(value)
    s = "".join(c if c.isprintable() or c in "\n\t" else "\ufffd" for c in s)
    return s if len(s) <= MAX_VALUE else s[:MAX_VALUE] + f"... ({len(s):,} characters)"


class _Report:
    """Collects evidence and notes for one file."""

    def __init__(self):
        self.evidence: list[dict] = []
        self.notes: list[str] = []
        self.c2pa: dict | None = None

    def note(self, text: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text[:300])

    def add(self, source: str, field: str, value: Any, ai: bool, what: str | None = None) -> None:
        self.evidence.append({"source": source, "field": field, "value": _short(value), "ai": ai, "what": what})

    def named(self, source: str, field: str, value: str) -> None:
        """A Software / Make / CreatorTool-like value: an AI claim when it names a known generator."""
        gen = find_generator(value)
        self.add(source, field, value, gen is not None, gen)

    def dst(self, source: str, field: str, value: str) -> None:
        term = value.strip().rstrip("/").rsplit("/", 1)[-1]
        self.add(source, field, value, term in GENERATIVE_SOURCE_TYPES, term)

    def result(self) -> dict:
        claims = [_claim_text(e) for e in self.evidence if e["ai"]]
        if self.c2pa and self.c2pa.get("ai") and self.c2pa.get("valid"):
            claims.insert(0, "c2pa: " + self.c2pa["summary"])
        found = bool(self.evidence or self.c2pa)
        summary = claims[0] if claims else ("metadata found, no AI claim" if found else "no provenance")
        return {"status": "ai_claim" if claims else "metadata" if found else "none",
                "summary": summary, "ai_claims": claims, "c2pa": self.c2pa, "evidence": self.evidence,
                "notes": self.notes}


def _claim_text(e: dict) -> str:
    return f"{e['source']} {e['field']}: {e['what'] or _short(e['value'])[:80]}"


def read_provenance(data: bytes, name: object = None) -> dict:
    """The provenance report of one file's bytes (see the module doc for its keys and the rule).

    status: "ai_claim" (something the rule counts), "metadata" (provenance-related metadata, no AI
    claim the rule counts) or "none" ("no provenance": says nothing about the pixels)."""
    rep = _Report()
    for step in (_c2pa, _png_chunks, _xmp_packets, _exif):
        try:
            step(data, rep)
        except Exception as e:  # one broken block costs that block, never the report or the batch
            rep.note(f"{step.__name__.strip('_')}_failed: {type(e).__name__}: {str(e)[:150]}")
    return rep.result()


# ---------------------------------------------------------------- C2PA
def _mime(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[4:8] == b"ftyp":
        return "video/mp4" if data[8:12] not in (b"heic", b"heix", b"avif", b"mif1") else "image/heif"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "video/avi"
    return None


_C2PA_CONTEXT = None


def _c2pa_context(c2pa):
    global _C2PA_CONTEXT
    if _C2PA_CONTEXT is None:  # offline and local: no remote manifests, no OCSP requests
        _C2PA_CONTEXT = c2pa.Context.from_dict({"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}})
    return _C2PA_CONTEXT


def _c2pa(data: bytes, rep: _Report) -> None:
    if b"c2pa" not in data:  # every C2PA store is a JUMBF box labelled "c2pa": no label, no manifest
        return
    _c2pa_read(_mime(data), io.BytesIO(data), rep)


def _c2pa_read(mime: str | None, stream, rep: _Report) -> None:
    """The manifest store of an encoded file (bytes or an open file, read as a stream)."""
    try:
        import c2pa
    except ImportError:
        rep.note("c2pa_unavailable: the file may hold a C2PA manifest; install fakescope[provenance] to read it")
        return
    try:
        with c2pa.Reader(mime, stream, context=_c2pa_context(c2pa)) as reader:
            store = json.loads(reader.json())
    except c2pa.C2paError.ManifestNotFound:
        return
    except (c2pa.C2paError, ValueError, OSError) as e:
        rep.c2pa = {"present": True, "valid": False, "trusted": False, "validation_state": "Unreadable", "ai": False,
                    "summary": "unreadable manifest", "failures": [], "actions": []}
        rep.note(f"c2pa_unreadable: {_short(e)[:200]}")
        return
    rep.c2pa = _c2pa_summary(store)
    if not rep.c2pa["valid"]:
        rep.note("c2pa_invalid: the manifest does not validate (" + ", ".join(rep.c2pa["failures"][:5]) +
                 "); its claims are reported, not trusted")


def _c2pa_summary(store: dict) -> dict:
    manifests = store.get("manifests") or {}
    active = manifests.get(store.get("active_manifest")) or {}
    state = str(store.get("validation_state") or ("Invalid" if store.get("validation_status") else "Valid"))
    failures = [str(s.get("code")) for s in store.get("validation_status") or [] if isinstance(s, dict)]
    gen = active.get("claim_generator")
    if not gen:
        infos = active.get("claim_generator_info") or []
        gen = ", ".join(" ".join(str(i.get(k)) for k in ("name", "version") if i.get(k)) for i in infos
                        if isinstance(i, dict))
    actions, sources = [], []
    for a in active.get("assertions") or []:
        if not (isinstance(a, dict) and str(a.get("label", "")).startswith("c2pa.actions")):
            continue
        for act in (a.get("data") or {}).get("actions") or []:
            if not isinstance(act, dict):
                continue
            agent = act.get("softwareAgent")
            agent = agent.get("name") if isinstance(agent, dict) else agent
            dst = act.get("digitalSourceType")
            term = str(dst).rstrip("/").rsplit("/", 1)[-1] if dst else None
            actions.append({"action": _short(act.get("action")), "digital_source_type": term,
                            "software_agent": _short(agent) if agent else None})
            if term:
                sources.append(term)
    sig = active.get("signature_info") or {}
    ai_terms = [t for t in sources if t in GENERATIVE_SOURCE_TYPES]
    ingredients = [i.get("title") for i in active.get("ingredients") or [] if isinstance(i, dict)]
    valid = state in ("Valid", "Trusted")
    summary = (f"{ai_terms[0] if ai_terms else 'manifest'} by {gen or 'unknown generator'}"
               f" ({state.lower()}{'' if state == 'Trusted' else ', signer not on a trust list' if valid else ''})")
    return {"present": True, "valid": valid, "trusted": state == "Trusted", "validation_state": state,
            "ai": bool(ai_terms), "summary": _short(summary), "claim_generator": _short(gen) if gen else None,
            "generator": find_generator(str(gen or "")),
            "signer": _short(sig.get("issuer") or sig.get("common_name") or "") or None,
            "actions": actions[:20], "digital_source_types": sorted(set(sources)),
            "ingredients": [_short(t) for t in ingredients[:10] if t], "failures": failures[:20]}


# ---------------------------------------------------------------- PNG text chunks
_FRONTEND_KEYS = {"invokeai_metadata": "InvokeAI", "invokeai_graph": "InvokeAI", "sd-metadata": "InvokeAI",
                  "dream": "InvokeAI", "fooocus_scheme": "Fooocus"}


def _png_chunks(data: bytes, rep: _Report) -> None:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return
    pos, texts = 8, 0
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body_at = pos + 8
        pos = body_at + length + 4
        if ctype == b"IEND":
            break
        if ctype not in (b"tEXt", b"zTXt", b"iTXt"):
            continue
        if length > MAX_CHUNK:
            rep.note(f"png_chunk_too_large: a {ctype.decode()} chunk of {length:,} bytes was skipped")
            continue
        if body_at + length > len(data):
            rep.note(f"png_truncated: the {ctype.decode()} chunk runs past the end of the file")
            break
        texts += 1
        if texts > MAX_TEXT_CHUNKS:
            rep.note(f"png_too_many_text_chunks: only the first {MAX_TEXT_CHUNKS} were read")
            break
        try:
            key, value = _png_text(ctype, data[body_at:body_at + length])
        except ValueError as e:
            rep.note(f"png_text_malformed: {e}")
            continue
        _png_key(key, value, rep)


def _inflate(raw: bytes) -> str:
    d = zlib.decompressobj()
    try:
        out = d.decompress(raw, MAX_INFLATE)
    except zlib.error as e:
        raise ValueError(f"compressed text does not inflate ({e})") from None
    if d.unconsumed_tail:
        raise ValueError(f"compressed text inflates past {MAX_INFLATE:,} bytes; not read")
    return out.decode("utf-8", "replace")


def _png_text(ctype: bytes, body: bytes) -> tuple[str, str]:
    key, sep, rest = body.partition(b"\0")
    if not sep or not 1 <= len(key) <= 79:
        raise ValueError(f"{ctype.decode()} chunk without a valid keyword")
    k = key.decode("latin-1")
    if ctype == b"tEXt":
        return k, rest.decode("latin-1")
    if ctype == b"zTXt":
        return k, _inflate(rest[1:])
    if len(rest) < 2:  # iTXt: flag, method, language\0, translated keyword\0, text
        raise ValueError("iTXt chunk too short")
    flag, rest = rest[0], rest[2:]
    parts = rest.split(b"\0", 2)
    if len(parts) != 3:
        raise ValueError("iTXt chunk without language and translated keyword")
    return k, _inflate(parts[2]) if flag else parts[2].decode("utf-8", "replace")


def _comfy(doc, key: str) -> bool:
    """A ComfyUI API prompt (nodes with class_type) or UI workflow (a "nodes" list)."""
    if isinstance(doc, str) and len(doc) <= MAX_CHUNK:  # a JSON document inside a JSON string
        try:
            doc = json.loads(doc)
        except (ValueError, RecursionError):
            return False
    if not isinstance(doc, dict):
        return False
    return any(isinstance(n, dict) and "class_type" in n for n in doc.values()) if key == "prompt" else "nodes" in doc


def _png_key(key: str, value: str, rep: _Report, source: str = "png") -> None:
    """One text field of a generation front-end (PNG chunks; video container tags reuse it)."""
    low = key.lower()
    if low == "xml:com.adobe.xmp":
        _xmp(value.encode("utf-8"), rep, "PNG iTXt")
    elif low == "parameters":
        ai = bool(re.search(r"\b(Steps|Sampler|CFG scale|Seed):", value))
        rep.add(source, "parameters", value, ai, "AUTOMATIC1111 / Forge generation parameters" if ai else None)
    elif low in ("prompt", "workflow"):
        ai = _comfy(_json(value, rep, f"{source} {key}"), low)
        rep.add(source, key, value, ai, f"ComfyUI {low}" if ai else None)
    elif low in ("software", "source"):
        rep.named(source, key, value)
    elif low == "comment":
        doc = _json(value, rep, f"{source} Comment") if value.lstrip().startswith("{") else None
        novelai = isinstance(doc, dict) and bool({"steps", "sampler", "scale"} & set(doc))
        # ComfyUI's video savers put {"prompt": ..., "workflow": ...} in the container's comment
        comfy = isinstance(doc, dict) and any(_comfy(doc.get(k), k) for k in ("prompt", "workflow"))
        if novelai or comfy or doc is not None:
            rep.add(source, key, value, novelai or comfy, "NovelAI generation parameters" if novelai
                    else "ComfyUI prompt / workflow" if comfy else None)
    elif low in _FRONTEND_KEYS:
        rep.add(source, key, value, True, f"{_FRONTEND_KEYS[low]} generation metadata")


def _json(text: str, rep: _Report, where: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        rep.note(f"json_malformed: {where} is not valid JSON ({type(e).__name__})")
        return None


# ---------------------------------------------------------------- XMP
_XMP_FIELDS = {"DigitalSourceType", "CreatorTool", "Software", "Make"}
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"


def _xmp_packets(data: bytes, rep: _Report) -> None:
    """XMP packets stored as plain text (JPEG APP1, WebP, TIFF, uncompressed PNG iTXt): found by
    their delimiters, whatever the container."""
    start, seen = 0, 0
    while seen < MAX_PACKETS:
        at = data.find(b"<x:xmpmeta", start)
        if at < 0:
            return
        seen += 1
        end = data.find(b"</x:xmpmeta>", at)
        if end < 0:
            rep.note("xmp_malformed: an XMP packet has no end (</x:xmpmeta>)")
            return
        start = end + 12
        if end - at > MAX_XMP:
            rep.note(f"xmp_too_large: an XMP packet of {end - at:,} bytes was skipped")
            continue
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            continue  # PNG: read from its iTXt chunk (_png_chunks), compressed or not
        _xmp(data[at:start], rep, "XMP")


def _xmp(packet: bytes, rep: _Report, where: str) -> None:
    import xml.etree.ElementTree as ET

    if len(packet) > MAX_XMP:
        rep.note(f"xmp_too_large: an XMP packet of {len(packet):,} bytes was skipped")
        return
    if b"<!DOCTYPE" in packet or b"<!ENTITY" in packet:
        rep.note("xmp_refused: the XMP packet declares a DOCTYPE or entities (XMP has none); not parsed")
        return
    try:
        root = ET.fromstring(packet)
    except (ET.ParseError, ValueError) as e:
        rep.note(f"xmp_malformed: {where} packet is not well-formed XML ({_short(e)[:120]})")
        return
    for el in root.iter():
        for attr, value in el.attrib.items():
            _xmp_field(attr, value, rep, where)
        tag = el.tag if isinstance(el.tag, str) else ""
        local = tag.rsplit("}", 1)[-1]
        if local in _XMP_FIELDS:
            values = [t.text.strip() for t in el.iter(_RDF + "li") if t.text and t.text.strip()]
            values += [el.text.strip()] if el.text and el.text.strip() else []
            values += [el.attrib[_RDF + "resource"]] if _RDF + "resource" in el.attrib else []
            for v in values[:10]:
                _xmp_field(tag, v, rep, where)


def _xmp_field(qname: str, value: str, rep: _Report, where: str) -> None:
    local = qname.rsplit("}", 1)[-1]
    if local not in _XMP_FIELDS or qname.startswith(_RDF):
        return
    if local == "DigitalSourceType":
        rep.dst("xmp", f"{where} Iptc4xmpExt:DigitalSourceType", value)
    else:
        rep.named("xmp", f"{where} {local}", value)


# ---------------------------------------------------------------- EXIF
_EXIF_TAGS = {0x0131: "Software", 0x010F: "Make", 0x0110: "Model", 0x013B: "Artist", 0x010E: "ImageDescription"}


def _exif(data: bytes, rep: _Report) -> None:
    from PIL import Image, UnidentifiedImageError

    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"eXIf" not in data:
        return  # a PNG's text chunks are read above; Pillow would only re-read them
    try:
        with Image.open(io.BytesIO(data)) as img:  # header only: no pixel is decoded
            exif = img.getexif()
            user_comment = exif.get_ifd(0x8769).get(0x9286) if exif else None
    except (UnidentifiedImageError, Image.DecompressionBombError):
        return  # not an image (the decoder says so) or too big: nothing to read here
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, KeyError, IndexError, TypeError) as e:
        rep.note(f"exif_malformed: {type(e).__name__}: {str(e)[:120]}")
        return
    for tag, field in _EXIF_TAGS.items():
        value = exif.get(tag)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not isinstance(value, str) or not value.strip():
            continue
        value = value.strip("\0 ")
        if field in ("Software", "Make", "Model"):
            rep.named("exif", field, value)
        elif find_generator(value):
            rep.named("exif", field, value)
    text = _user_comment(user_comment)
    if text and re.search(r"\b(Steps|Sampler|CFG scale|Seed):", text):
        rep.add("exif", "UserComment", text, True, "AUTOMATIC1111 / Forge generation parameters")


def _user_comment(raw) -> str | None:
    """EXIF UserComment: an 8-byte charset prefix, then the text."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, bytes) or len(raw) < 8:
        return None
    prefix, body = raw[:8], raw[8:8 + 4 * MAX_VALUE]
    if prefix.startswith(b"UNICODE"):
        enc = "utf-16-be" if body[:1] == b"\0" else "utf-16-le"
        return body.decode(enc, "replace")
    return body.decode("utf-8", "replace")


# ---------------------------------------------------------------- video containers
# Container and stream tags that name the tool which made or wrote the file.
_VIDEO_TOOL_TAGS = frozenset({"encoder", "encoded_by", "software", "creation_tool", "handler_name", "make", "model",
                              "com.apple.quicktime.software", "com.apple.quicktime.make",
                              "com.apple.quicktime.model", "com.android.manufacturer"})
_VIDEO_TEXT_TAGS = frozenset({"parameters", "prompt", "workflow", "comment"})
MAX_STREAMS = 8


def read_video_provenance(source, name: object = None) -> dict:
    """The provenance report of a video: a path (streamed, never read whole) or its bytes. The same
    keys and rule as `read_provenance`. Read here: a C2PA manifest (MP4 / MOV / AVI, through
    c2pa-python), XMP (MP4 / MOV, as FFmpeg exports it: IPTC DigitalSourceType, CreatorTool, ...),
    the container's and streams' tags (encoder, software, handler name, make, ... against
    GENERATORS) and generation front-ends' fields in tags (ComfyUI prompt / workflow, also inside
    a JSON comment; A1111-style parameters). Call it on a video that `read_video` accepted (its
    byte limit is checked there)."""
    rep = _Report()
    for step in (_video_c2pa, _video_tags):
        try:
            step(source, rep)
        except Exception as e:  # as for images: one broken block costs that block
            rep.note(f"{step.__name__.strip('_')}_failed: {type(e).__name__}: {str(e)[:150]}")
    return rep.result()


def _video_c2pa(source, rep: _Report) -> None:
    if isinstance(source, (bytes, bytearray, memoryview)):
        _c2pa(bytes(source), rep)
        return
    with open(source, "rb") as f:
        mime = _mime(f.read(16))
        if mime in ("video/mp4", "video/avi"):  # the video containers c2pa-python reads
            f.seek(0)
            _c2pa_read(mime, f, rep)


def _video_tags(source, rep: _Report) -> None:
    try:
        import av
    except ImportError:
        rep.note("video_tags_unavailable: install fakescope[video] to read a video's container tags")
        return
    src = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    with av.open(src, mode="r", metadata_errors="ignore", options={"export_xmp": "1"}) as container:
        tagged = [("container", container.metadata)]
        tagged += [(f"{st.type} stream", st.metadata) for st in list(container.streams)[:MAX_STREAMS]]
        for where, tags in tagged:
            for key, value in list(tags.items())[:MAX_TEXT_CHUNKS]:
                low = str(key).lower()
                if low == "xmp":
                    _xmp(str(value).encode("utf-8"), rep, "video")
                elif low in _VIDEO_TOOL_TAGS:
                    rep.named("video", f"{where} {low}", str(value))
                elif low in _VIDEO_TEXT_TAGS:
                    _png_key(low, str(value), rep, "video")


def apply_rule(label: str | None, reason: str | None, prov: dict | None, mode: str) -> tuple[str | None, str | None]:
    """(label, reason) after the provenance rule: "decide" turns a verdict with an AI claim into
    "fake" (reason "provenance: ..."); "report" and "off" leave it; a failed item keeps None."""
    if mode != "decide" or not prov or label is None or not prov.get("ai_claims"):
        return label, reason
    return "fake", "provenance: " + prov["ai_claims"][0]


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"provenance mode must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


__all__ = ["MODES", "DEFAULT_MODE", "GENERATORS", "GENERATIVE_SOURCE_TYPES", "read_provenance",
           "read_video_provenance", "apply_rule",
           "find_generator", "check_mode"]
