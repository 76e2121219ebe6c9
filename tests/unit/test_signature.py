from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from argyle_pipeline.receiving.signature import InvalidSignature, sign, verify

KNOWN_SECRET = "my little secret"
KNOWN_BODY = b'{"name": "Account added", "event": "accounts.added"}'
KNOWN_SIGNATURE = (
    "13b68c651cdf714d8d00e88d3c9997d2ea2cb6ffcc57ba2d9164af5898169124"
    "e75505f354ded4350c96b03b2cddf01cbe71bc26cb2dc656a69ef670bcda0f86"
)


def test_known_answer_from_argyle_docs() -> None:
    # Given Argyle's published example / Then our signature is theirs, and it verifies
    assert sign(KNOWN_BODY, KNOWN_SECRET) == KNOWN_SIGNATURE
    verify(KNOWN_BODY, KNOWN_SIGNATURE, [KNOWN_SECRET])


def test_uppercase_hex_signature_is_accepted() -> None:
    verify(KNOWN_BODY, KNOWN_SIGNATURE.upper(), [KNOWN_SECRET])


def test_either_secret_verifies_during_rotation() -> None:
    # Given a current and a previous secret
    secrets = ["new-secret", "old-secret"]
    # Then bodies signed with either verify, and a third secret does not
    verify(KNOWN_BODY, sign(KNOWN_BODY, "new-secret"), secrets)
    verify(KNOWN_BODY, sign(KNOWN_BODY, "old-secret"), secrets)
    with pytest.raises(InvalidSignature) as err:
        verify(KNOWN_BODY, sign(KNOWN_BODY, "other"), secrets)
    # The reason, also what a tool that prints the error shows
    assert err.value.reason == str(err.value) == "signature_mismatch"


def test_one_flipped_byte_of_the_body_is_rejected() -> None:
    tampered = bytearray(KNOWN_BODY)
    tampered[10] ^= 0x01
    with pytest.raises(InvalidSignature):
        verify(bytes(tampered), KNOWN_SIGNATURE, [KNOWN_SECRET])


def test_reformatted_json_is_rejected() -> None:
    # The raw bytes are signed: parsing and re-rendering the body must not verify
    with pytest.raises(InvalidSignature):
        verify(b'{"name":"Account added","event":"accounts.added"}', KNOWN_SIGNATURE, [KNOWN_SECRET])


@pytest.mark.parametrize("secrets", [[], [""], ["", ""]])
def test_no_usable_secret_fails_closed(secrets: list[str]) -> None:
    # Even a "signature" of an empty-key HMAC must not pass when no secret is configured
    with pytest.raises(InvalidSignature) as err:
        verify(KNOWN_BODY, sign(KNOWN_BODY, ""), secrets)
    assert err.value.reason == "no_secret_configured"


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_signature_is_rejected(header: str | None) -> None:
    with pytest.raises(InvalidSignature) as err:
        verify(KNOWN_BODY, header, [KNOWN_SECRET])
    assert err.value.reason in {"missing_signature", "signature_mismatch"}


def test_non_ascii_signature_is_rejected_not_crashing() -> None:
    with pytest.raises(InvalidSignature):
        verify(KNOWN_BODY, "é" * 128, [KNOWN_SECRET])


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=2048), secret=st.text(min_size=1, max_size=64), data=st.data())
def test_property_signed_verifies_and_any_one_byte_change_does_not(
    body: bytes, secret: str, data: st.DataObject
) -> None:
    signature = sign(body, secret)
    verify(body, signature, [secret])

    if body:
        i = data.draw(st.integers(min_value=0, max_value=len(body) - 1), label="body index")
        delta = data.draw(st.integers(min_value=1, max_value=255), label="xor")
        changed = bytearray(body)
        changed[i] ^= delta
        with pytest.raises(InvalidSignature):
            verify(bytes(changed), signature, [secret])

    j = data.draw(st.integers(min_value=0, max_value=len(signature) - 1), label="signature index")
    replacement = data.draw(st.sampled_from("0123456789abcdef").filter(lambda c: c != signature[j]))
    forged = signature[:j] + replacement + signature[j + 1 :]
    with pytest.raises(InvalidSignature):
        verify(body, forged, [secret])
