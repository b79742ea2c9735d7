"""Provenance (fakescope.provenance): every kind of evidence read from files the test builds,
the decide/report rule, and hostile metadata that must end as a per-item note, never a crash."""
from __future__ import annotations

import zlib

import pytest

import evidence_files as E
from fakescope.provenance import apply_rule, find_generator, read_provenance

pytest.importorskip("c2pa")
pytest.importorskip("cryptography")

COMFY_PROMPT = '{"3": {"class_type": "KSampler", "inputs": {"seed": 1}}, "4": {"class_type": "CheckpointLoaderSimple"}}'


@pytest.fixture(scope="module")
def signed():
    return E.c2pa_signed_jpeg("trainedAlgorithmicMedia", "TestGen")


def test_valid_c2pa_with_a_generative_source_type_decides_fake(signed):
    p = read_provenance(signed)
    assert p["status"] == "ai_claim"
    c = p["c2pa"]
    assert c["valid"] and not c["trusted"] and c["validation_state"] == "Valid"
    assert c["digital_source_types"] == ["trainedAlgorithmicMedia"]
    assert c["claim_generator"] == "TestGen 1.0" and c["actions"][0]["action"] == "c2pa.created"
    label, reason = apply_rule("real", None, p, "decide")
    assert label == "fake" and reason.startswith("provenance: c2pa: trainedAlgorithmicMedia")
    assert apply_rule("real", None, p, "report") == ("real", None)
    assert apply_rule("uncertain", "ood: far", p, "decide")[0] == "fake"
    assert apply_rule(None, None, p, "decide") == (None, None)  # a failed item stays failed


def test_a_manifest_that_does_not_validate_is_reported_not_trusted(signed):
    p = read_provenance(E.tampered(signed))
    assert p["c2pa"]["present"] and not p["c2pa"]["valid"] and p["c2pa"]["validation_state"] == "Invalid"
    assert "assertion.dataHash.mismatch" in p["c2pa"]["failures"]
    assert p["c2pa"]["digital_source_types"] == ["trainedAlgorithmicMedia"]  # what it claims, still shown
    assert p["ai_claims"] == [] and any(n.startswith("c2pa_invalid") for n in p["notes"])
    assert apply_rule("real", None, p, "decide") == ("real", None)


def test_a_valid_manifest_of_a_capture_is_no_ai_claim_and_never_makes_real():
    p = read_provenance(E.c2pa_signed_jpeg("digitalCapture", "Camera App"))
    assert p["c2pa"]["valid"] and p["status"] == "metadata" and p["ai_claims"] == []
    assert apply_rule("fake", None, p, "decide") == ("fake", None)


@pytest.mark.parametrize("source_type, claim", [("trainedAlgorithmicMedia", True),
                                                ("compositeWithTrainedAlgorithmicMedia", True),
                                                ("digitalCapture", False)])
def test_xmp_digital_source_type(source_type, claim):
    p = read_provenance(E.jpeg_with_xmp(E.xmp_packet(E.dst_description(source_type))))
    ev = [e for e in p["evidence"] if "DigitalSourceType" in e["field"]]
    assert len(ev) == 1 and ev[0]["value"] == E.IPTC + source_type and ev[0]["ai"] is claim
    assert (p["status"] == "ai_claim") is claim


def test_xmp_creator_tool_in_a_compressed_png_itxt():
    xmp = E.xmp_packet(E.dst_description("digitalCapture", tool="Adobe Firefly 3"))
    p = read_provenance(E.png_with_chunks(E.itxt_chunk("XML:com.adobe.xmp", xmp, compress=True)))
    tool = [e for e in p["evidence"] if e["field"].endswith("CreatorTool")]
    assert tool and tool[0]["what"] == "Adobe Firefly" and p["status"] == "ai_claim"


@pytest.mark.parametrize("chunks, what", [
    ([E.text_chunk("parameters", "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42")],
     "AUTOMATIC1111 / Forge generation parameters"),
    ([E.text_chunk("prompt", COMFY_PROMPT)], "ComfyUI prompt"),
    ([E.text_chunk("workflow", '{"last_node_id": 9, "nodes": []}')], "ComfyUI workflow"),
    ([E.text_chunk("Software", "NovelAI"), E.text_chunk("Comment", '{"steps": 28, "sampler": "k_euler", "scale": 5}')],
     "NovelAI"),
])
def test_generation_front_end_chunks(chunks, what):
    p = read_provenance(E.png_with_chunks(*chunks))
    assert p["status"] == "ai_claim" and p["notes"] == []
    assert p["ai_claims"][0].endswith(what)


def test_exif_software_naming_a_generator_and_one_that_does_not():
    p = read_provenance(E.jpeg_with_exif({0x0131: "Midjourney v6", 0x010F: "Canon"}))
    by_field = {e["field"]: e for e in p["evidence"]}
    assert by_field["Software"]["what"] == "Midjourney" and by_field["Software"]["ai"]
    assert by_field["Make"]["ai"] is False
    p = read_provenance(E.jpeg_with_exif({0x0131: "GIMP 2.10"}))
    assert p["status"] == "metadata" and p["ai_claims"] == []


def test_plain_files_have_no_provenance_and_that_decides_nothing():
    for data in (E.png_bytes(), E.jpeg_bytes()):
        p = read_provenance(data)
        assert (p["status"], p["summary"], p["evidence"], p["c2pa"]) == ("none", "no provenance", [], None)
        assert apply_rule("real", None, p, "decide") == ("real", None)
        assert apply_rule("fake", None, p, "decide") == ("fake", None)


def test_generator_table():
    assert find_generator("Adobe Firefly Image 3") == "Adobe Firefly"
    assert find_generator("DALL·E 3") == "DALL-E (OpenAI)"
    assert find_generator("Google Imagen 3") == "Google Imagen / Gemini"
    assert find_generator("Imagenes de Espana") is None and find_generator("Canon EOS R5") is None


@pytest.mark.parametrize("data, note", [
    (E.png_with_chunks(E.chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"a" * (20 << 20)))), "png_text_malformed"),
    (E.png_with_chunks(E.chunk(b"tEXt", b"k\0v", length=2**31)), "png_chunk_too_large"),
    (E.png_bytes()[:-12] + E.chunk(b"tEXt", b"parameters\0" + b"x" * 100, length=5000), "png_truncated"),
    (E.png_with_chunks(E.chunk(b"tEXt", b"no keyword separator")), "png_text_malformed"),
    (E.png_with_chunks(E.chunk(b"zTXt", b"parameters\0\0not zlib at all")), "png_text_malformed"),
    (E.png_with_chunks(E.text_chunk("prompt", '{"3": {"class_type": "KSampler"')), "json_malformed"),
    (E.png_with_chunks(E.itxt_chunk("XML:com.adobe.xmp", '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
                                    + E.xmp_packet("&b;&b;&b;"))), "xmp_refused"),
    (E.jpeg_with_xmp("<x:xmpmeta><rdf:RDF><rdf:Description"), "xmp_malformed"),
    (E.jpeg_with_xmp(E.xmp_packet("<a><b></a>")), "xmp_malformed"),
    (E.jpeg_bytes() + b"<x:xmpmeta>" + b" " * (5 << 20) + b"</x:xmpmeta>", "xmp_too_large"),  # trailing data
])
def test_hostile_metadata_is_a_note_never_a_crash_nor_a_claim(data, note):
    p = read_provenance(data)
    assert any(n.startswith(note) for n in p["notes"]), p["notes"]
    assert p["ai_claims"] == []


def test_garbage_is_never_a_crash(signed):
    for data in (b"c2pa" * 100, signed[: len(signed) // 2], b"\x89PNG\r\n\x1a\n" + b"\xff" * 40, b"\0"):
        p = read_provenance(data)
        assert p["status"] in ("none", "metadata") and p["ai_claims"] == []
